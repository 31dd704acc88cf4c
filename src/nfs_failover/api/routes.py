"""The API's routes over a ``ControllerHandle``: the reads, and the actions shielded from
their requests.

Actions and ``/health`` run on the event loop (``async def``), so a manual command is only
ever started from the loop that owns the controller; the reads that go to the store
(status, volumes, history) run in FastAPI's thread pool, so a store that waits never
holds up the event loop. An action is shielded from its request: a client that goes
away, or the API stopping, does not cancel a failover halfway; the controller finishes
it and journals the result.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from typing import Annotated

from fastapi import Body, FastAPI, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from nfs_failover.api.replies import HealthReply, error_reply, error_responses
from nfs_failover.controller.handle import ControllerHandle
from nfs_failover.controller.snapshot import (
    AbortResult,
    ActionResult,
    JournalEntry,
    PauseResult,
    VolumeStatus,
    WorkflowResult,
)
from nfs_failover.errors import NfsFailoverError
from nfs_failover.store import StoreError

log = logging.getLogger(__name__)

DEFAULT_HISTORY_LIMIT = 1000
MAX_HISTORY_LIMIT = 10_000
MAX_EVENT_ID = 2**63 - 1  # sqlite's largest row id
# Actions started over the API, held until done: the event loop keeps weak references only.
_ACTIONS: set[asyncio.Future[ActionResult]] = set()


class ActionBody(BaseModel):
    """The optional JSON body of ``POST /volumes/{name}/failover``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    force: bool = False


def add_read_routes(app: FastAPI, handle: ControllerHandle) -> None:
    # Plain functions, not coroutines: FastAPI runs them in its thread pool, so the store
    # reads behind them never wait on the event loop.
    @app.get("/status", response_model=list[VolumeStatus])
    def status() -> Sequence[VolumeStatus]:
        return handle.status()

    @app.get("/volumes/{name}", response_model=VolumeStatus, responses=error_responses(404, 422))
    def volume(name: str) -> VolumeStatus | JSONResponse:
        found = _find_volume(handle, name)
        return _no_volume(name) if found is None else found

    # An unknown volume is not refused here: the journal keeps the history of volumes
    # since removed from the config, and a name without entries simply has none.
    # The journal is in the store: while it does not answer, a 503 says so.
    @app.get("/history", response_model=list[JournalEntry], responses=error_responses(422, 503))
    def history(
        volume: str | None = None,
        after: Annotated[int, Query(ge=0, le=MAX_EVENT_ID)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_HISTORY_LIMIT)] = DEFAULT_HISTORY_LIMIT,
    ) -> Sequence[JournalEntry] | JSONResponse:
        try:
            return handle.history(volume, after, limit)
        except StoreError as exc:
            return error_reply(503, f"store unreachable: {exc}")

    @app.get("/health", response_model=HealthReply, responses={503: {"model": HealthReply}})
    async def health() -> JSONResponse:
        if handle.alive():
            return JSONResponse({"status": "alive"})
        return JSONResponse({"status": "stuck"}, status_code=503)


def add_action_routes(app: FastAPI, handle: ControllerHandle) -> None:
    errors = error_responses(401, 404, 409, 413, 422)

    @app.post("/volumes/{name}/failover", response_model=WorkflowResult, responses=errors)
    async def failover(
        name: str, body: Annotated[ActionBody | None, Body()] = None
    ) -> ActionResult | JSONResponse:
        return await _act(handle, "failover", name, force=body is not None and body.force)

    @app.post("/volumes/{name}/failback", response_model=WorkflowResult, responses=errors)
    async def failback(name: str) -> ActionResult | JSONResponse:
        return await _act(handle, "failback", name)

    @app.post("/volumes/{name}/switchover", response_model=WorkflowResult, responses=errors)
    async def switchover(name: str) -> ActionResult | JSONResponse:
        return await _act(handle, "switchover", name)

    @app.post("/volumes/{name}/abort", response_model=AbortResult, responses=errors)
    async def abort(
        name: str, body: Annotated[ActionBody | None, Body()] = None
    ) -> ActionResult | JSONResponse:
        return await _act(handle, "abort", name, force=body is not None and body.force)

    @app.post("/pause", response_model=PauseResult, responses=errors)
    async def pause(volume: str | None = None) -> ActionResult | JSONResponse:
        return await _act(handle, "pause", volume)

    @app.post("/resume", response_model=PauseResult, responses=errors)
    async def resume(volume: str | None = None) -> ActionResult | JSONResponse:
        return await _act(handle, "resume", volume)


async def _act(
    handle: ControllerHandle, action: str, volume: str | None, *, force: bool = False
) -> ActionResult | JSONResponse:
    if volume is not None and not _known(handle, volume):
        return _no_volume(volume)
    target = "every volume" if volume is None else f"volume {volume!r}"
    log.info("API: %s of %s requested%s", action, target, " (forced)" if force else "")
    # Shielded: a client that goes away, or the API stopping, must not cancel an action
    # halfway (a failover that has fenced but not yet steered); the controller finishes it.
    running = asyncio.ensure_future(handle.request(action, volume, force=force))
    _ACTIONS.add(running)
    running.add_done_callback(_ACTIONS.discard)
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        log.warning("API: the request for %s of %s went away; the action goes on", action, target)
        running.add_done_callback(functools.partial(_log_outcome, f"{action} of {target}"))
        raise
    except NfsFailoverError as exc:
        log.info("API: %s of %s refused: %s", action, target, exc)
        return error_reply(409, str(exc))


def _log_outcome(what: str, action: asyncio.Future[ActionResult]) -> None:
    """How an action whose request went away ended: nobody else will hear of it."""
    if action.cancelled():
        log.warning("API: %s was cancelled", what)
    elif isinstance(error := action.exception(), NfsFailoverError):
        log.info("API: %s refused: %s", what, error)
    elif error is not None:
        log.error("API: %s failed (a bug)", what, exc_info=error)
    else:
        log.info("API: %s done", what)


def _find_volume(handle: ControllerHandle, name: str) -> VolumeStatus | None:
    return next((entry for entry in handle.status() if entry.name == name), None)


def _known(handle: ControllerHandle, name: str) -> bool:
    """A volume's name, or a group's: an action on a group moves all its volumes."""
    return any(name in (entry.name, entry.group) for entry in handle.status())


def _no_volume(name: str) -> JSONResponse:
    return error_reply(404, f"no volume {name!r}")
