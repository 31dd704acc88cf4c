"""The HTTP API of a running controller: status, history, health, metrics, and actions.

Owns the FastAPI app over a ``ControllerHandle`` (``build_app``), the bearer token file
(``read_token``) and running the server inside the controller's event loop (``serve``).

Reads (GET) are open: status, history, health and metrics say what the controller sees
and does, which is no secret, and monitoring and liveness probes must reach them without
a credential. Actions (every method but GET, HEAD and OPTIONS) change which replica
clients mount, so each needs ``Authorization: Bearer <token>``; a request without it is
answered 401 before its body is read and before the handle is called. A bearer header is
never sent by a browser on its own, so a web page cannot forge an action (no CSRF). The
token is compared in constant time and never logged or echoed. The server listens on
loopback only unless told otherwise: it speaks plain HTTP, and a token sent over the
network in clear text would be a token given away.

An action is shielded from its request: a client that goes away, or the API stopping,
does not cancel a failover halfway; the controller finishes it and journals the result.

Actions and ``/health`` run on the event loop (``async def``), so a manual command is only
ever started from the loop that owns the controller; the reads that go to the store
(status, volumes, history, metrics) run in FastAPI's thread pool, so a store that waits
never holds up the event loop. Errors are JSON objects ``{"error": "one line"}``.

Replies are the controller's snapshots (``controller.snapshot``), declared as each
route's response model: a reply that breaks its model is a 500, never sent, and
``GET /openapi.json`` describes every reply field by field. FastAPI's ``/docs`` and
``/redoc`` pages are disabled: they load their scripts from a CDN into the browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import ipaddress
import logging
import os
import socket
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import uvicorn
from fastapi import Body, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from nfs_failover import __version__
from nfs_failover.config import HostPort
from nfs_failover.controller.decide import VolumeState
from nfs_failover.controller.handle import ControllerHandle
from nfs_failover.controller.snapshot import (
    AbortResult,
    ActionResult,
    JournalEntry,
    PauseResult,
    VolumeMetrics,
    VolumeStatus,
    WorkflowResult,
)
from nfs_failover.errors import ConfigError, NfsFailoverError

__all__ = [
    "DEFAULT_HISTORY_LIMIT",
    "MAX_HISTORY_LIMIT",
    "PROBE_LATENCY_BUCKETS",
    "ActionBody",
    "HandleCollector",
    "TokenGate",
    "VolumeMetrics",
    "build_app",
    "read_token",
    "serve",
]

log = logging.getLogger(__name__)

DEFAULT_HISTORY_LIMIT = 1000
MAX_HISTORY_LIMIT = 10_000
MAX_TOKEN_BYTES = 4096
# uvicorn waits this long for open requests (an action may be running) once told to stop;
# serve() gives it a little more, then closes what is left.
SHUTDOWN_GRACE_SECONDS = 5
SHUTDOWN_WAIT_SECONDS = SHUTDOWN_GRACE_SECONDS + 2.0
# Probe latencies run from sub-millisecond (loopback) to the probe timeout (seconds).
PROBE_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

_UNAUTHORIZED = "a bearer token is required"
MAX_BODY_BYTES = 64 * 1024  # an action's body is {"force": true}
MAX_CONNECTIONS = 256
HEADER_SECONDS = 10.0  # to send a request's line and headers
IDLE_SECONDS = 5  # a keep-alive connection between requests
MAX_EVENT_ID = 2**63 - 1  # sqlite's largest row id
_OPEN_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Actions started over the API, held until done: the event loop keeps weak references only.
_ACTIONS: set[asyncio.Future[ActionResult]] = set()


class ActionBody(BaseModel):
    """The optional JSON body of ``POST /volumes/{name}/failover``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    force: bool = False


class ErrorReply(BaseModel):
    """Every error: 401 without the token, 404, 409 refused, 413, 422 invalid, 500."""

    error: str


class HealthReply(BaseModel):
    """``GET /health``: 200 ``alive``, or 503 ``stuck`` when the loop stopped cycling."""

    status: Literal["alive", "stuck"]


# -- the app -----------------------------------------------------------------------------


def build_app(handle: ControllerHandle, token: str) -> FastAPI:
    """The API over ``handle``; actions need ``Authorization: Bearer <token>``.

    Routes: ``GET /status``, ``/volumes/{name}``, ``/history``, ``/health``, ``/metrics``,
    ``/openapi.json``;
    ``POST /volumes/{name}/failover`` (body ``{"force": bool}``, optional),
    ``/volumes/{name}/failback``, ``/volumes/{name}/switchover``, ``/pause`` and
    ``/resume`` (``?volume=NAME``, optional: without it, every volume).
    """
    if not token:
        raise ValueError("the API token must not be empty")
    app = FastAPI(title="nfs-failover", version=__version__, docs_url=None, redoc_url=None)
    app.add_middleware(TokenGate, token=token)
    app.add_middleware(BodyLimit)  # outermost: before the token is even looked at
    _answer_errors_as_json(app)
    _add_read_routes(app, handle)
    _add_metrics_route(app, handle)
    _add_action_routes(app, handle)
    return app


class TokenGate:
    """ASGI middleware: every method but GET, HEAD and OPTIONS needs the bearer token.

    A middleware rather than a FastAPI dependency: it answers before routing and body
    parsing, so an unauthenticated request learns nothing (not even whether its route or
    body is valid), and an action route added later cannot forget the check.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _OPEN_METHODS:
            await self.app(scope, receive, send)
            return
        header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        if _bearer_matches(header, self._expected):
            await self.app(scope, receive, send)
            return
        refusal = _error(401, _UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})
        await refusal(scope, receive, send)


def _bearer_matches(header: bytes | None, expected: bytes) -> bool:
    """Whether ``header`` is ``Bearer <expected>`` (the scheme in any case, RFC 7235)."""
    if header is None:
        return False
    scheme, _, credentials = header.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    return hmac.compare_digest(credentials.strip(), expected)


def _answer_errors_as_json(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_problems(exc.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail).lower(), headers=exc.headers)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises the exception after this answer, and uvicorn logs it.
        return _error(500, "internal error; the controller's log has the details")


def _validation_problems(errors: Sequence[Any]) -> str:
    """Pydantic's errors as one line: ``limit: input should be ... 10000; after: ...``."""
    problems = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        kind = error.get("type")
        if kind == "json_invalid":
            problems.append("body: not valid JSON")
            continue
        if kind in {"model_attributes_type", "model_type", "dict_type"} and loc == ["body"]:
            problems.append('body: expected a JSON object such as {"force": true}')
            continue
        where = ".".join(loc[1:]) or (loc[0] if loc else "request")
        message = str(error.get("msg", "invalid"))
        problems.append(f"{where}: {message[:1].lower()}{message[1:]}")
    return "; ".join(problems) or "invalid request"


def _add_read_routes(app: FastAPI, handle: ControllerHandle) -> None:
    # Plain functions, not coroutines: FastAPI runs them in its thread pool, so the store
    # reads behind them never wait on the event loop.
    @app.get("/status", response_model=list[VolumeStatus])
    def status() -> Sequence[VolumeStatus]:
        return handle.status()

    @app.get("/volumes/{name}", response_model=VolumeStatus, responses=_errors(404, 422))
    def volume(name: str) -> VolumeStatus | JSONResponse:
        found = _find_volume(handle, name)
        return _no_volume(name) if found is None else found

    # An unknown volume is not refused here: the journal keeps the history of volumes
    # since removed from the config, and a name without entries simply has none.
    @app.get("/history", response_model=list[JournalEntry], responses=_errors(422))
    def history(
        volume: str | None = None,
        after: Annotated[int, Query(ge=0, le=MAX_EVENT_ID)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_HISTORY_LIMIT)] = DEFAULT_HISTORY_LIMIT,
    ) -> Sequence[JournalEntry]:
        return handle.history(volume, after, limit)

    @app.get("/health", response_model=HealthReply, responses={503: {"model": HealthReply}})
    async def health() -> JSONResponse:
        if handle.alive():
            return JSONResponse({"status": "alive"})
        return JSONResponse({"status": "stuck"}, status_code=503)


def _add_metrics_route(app: FastAPI, handle: ControllerHandle) -> None:
    # A registry of the app's own: two apps in one process (tests, a restart) never
    # collide, and nothing else registered globally leaks into this exposition.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HandleCollector(handle))

    @app.get("/metrics", response_class=Response)
    def metrics() -> Response:
        return Response(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


def _add_action_routes(app: FastAPI, handle: ControllerHandle) -> None:
    errors = _errors(401, 404, 409, 413, 422)

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
    if volume is not None and _find_volume(handle, volume) is None:
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
        return _error(409, str(exc))


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


def _no_volume(name: str) -> JSONResponse:
    return _error(404, f"no volume {name!r}")


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error answers of a route, for its OpenAPI description."""
    return {code: {"model": ErrorReply} for code in codes}


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


# -- metrics -----------------------------------------------------------------------------


class HandleCollector:
    """Reads ``metrics_state()`` and ``alive()`` at each scrape; keeps no state of its own.

    ``nfs_failover_probe_latency_seconds`` is a histogram of the samples the handle
    reports now (its recent window), rebuilt at each scrape: the handle gives no sample
    ids, so samples cannot be counted once each into a cumulative histogram. Its buckets
    and count are therefore not monotonic: use ``histogram_quantile`` on the buckets as
    scraped, not on ``rate()`` of them. A volume whose lag is unknown has no
    ``nfs_failover_replication_lag_seconds`` sample (absent, not zero).
    """

    def __init__(self, handle: ControllerHandle) -> None:
        self._handle = handle

    def describe(self) -> Iterable[Metric]:
        return ()  # nothing to check for duplicates at registration; no scrape at startup

    def collect(self) -> Iterator[Metric]:
        entries = self._handle.metrics_state()
        yield _state_family(entries)
        yield _lag_family(entries)
        yield _failovers_family(entries)
        yield _latency_family(entries)
        alive = GaugeMetricFamily(
            "nfs_failover_controller_alive",
            "1 while the decision loop completes its cycles in time, 0 when it is stuck.",
            value=1.0 if self._handle.alive() else 0.0,
        )
        yield alive


def _state_family(entries: Iterable[VolumeMetrics]) -> Metric:
    family = GaugeMetricFamily(
        "nfs_failover_volume_state",
        "1 for the state the volume is in, 0 for each other state it can be in.",
        labels=["volume", "state"],
    )
    for entry in entries:
        for state in VolumeState:
            family.add_metric([entry.volume, state.value], 1.0 if state is entry.state else 0.0)
    return family


def _lag_family(entries: Iterable[VolumeMetrics]) -> Metric:
    family = GaugeMetricFamily(
        "nfs_failover_replication_lag_seconds",
        "Age of the newest data the destination has; absent while unknown.",
        labels=["volume"],
    )
    for entry in entries:
        if entry.replication_lag_seconds is not None:
            family.add_metric([entry.volume], entry.replication_lag_seconds)
    return family


def _failovers_family(entries: Iterable[VolumeMetrics]) -> Metric:
    family = CounterMetricFamily(
        "nfs_failover_failovers",
        "Failovers of the volume, as the journal counts them.",
        labels=["volume"],
    )
    for entry in entries:
        family.add_metric([entry.volume], float(entry.failovers_total))
    return family


def _latency_family(entries: Iterable[VolumeMetrics]) -> Metric:
    family = HistogramMetricFamily(
        "nfs_failover_probe_latency_seconds",
        "Latency of the recent probes of each replica, as the controller reports them now.",
        labels=["volume", "replica"],
    )
    for entry in entries:
        by_replica: dict[str, list[float]] = {}
        for sample in entry.probe_latency_seconds:
            by_replica.setdefault(sample.replica, []).append(sample.seconds)
        for replica, samples in by_replica.items():
            buckets = [
                (str(bound), float(sum(s <= bound for s in samples)))
                for bound in PROBE_LATENCY_BUCKETS
            ]
            buckets.append(("+Inf", float(len(samples))))
            family.add_metric([entry.volume, replica], buckets, sum_value=sum(samples))
    return family


# -- the token ---------------------------------------------------------------------------


def read_token(path: Path) -> str:
    """The bearer token in ``path``, without surrounding whitespace.

    The file must be a regular file, readable by its owner only (mode & 0o077 == 0),
    and hold one token of printable ASCII without spaces. Raises ``ConfigError`` with
    one line ``PATH: problem``; the content is never shown.
    """
    try:
        # O_NONBLOCK: a FIFO put in the token's place must not hang the start-up.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        reason = (exc.strerror or type(exc).__name__).lower()
        raise ConfigError([f"{path}: cannot read the API token file: {reason}"]) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ConfigError([f"{path}: the API token file is not a regular file"])
        if mode & 0o077:
            raise ConfigError(
                [
                    f"{path}: the API token file is accessible by group or others (mode"
                    f" {stat.S_IMODE(mode):04o}); refusing it: chmod 600 {path}"
                ]
            )
        data = os.read(fd, MAX_TOKEN_BYTES + 1)
    except OSError as exc:
        reason = (exc.strerror or type(exc).__name__).lower()
        raise ConfigError([f"{path}: cannot read the API token file: {reason}"]) from None
    finally:
        os.close(fd)
    return _check_token(path, data)


def _check_token(path: Path, data: bytes) -> str:
    if len(data) > MAX_TOKEN_BYTES:
        raise ConfigError([f"{path}: the API token file is larger than {MAX_TOKEN_BYTES} bytes"])
    token = data.strip()
    if not token:
        raise ConfigError(
            [
                f"{path}: the API token file is empty; write a token into it, such as the"
                " output of: openssl rand -hex 32"
            ]
        )
    if any(byte <= 0x20 or byte >= 0x7F for byte in token):
        raise ConfigError(
            [
                f"{path}: the API token must be one line of printable ASCII without spaces"
                " (content not shown)"
            ]
        )
    return token.decode("ascii")


# -- the server --------------------------------------------------------------------------


class _DeadlineProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline for each request's head: a connection
    that has not sent a whole request line and headers within ``HEADER_SECONDS`` (a
    client that sends nothing, or trickles a byte at a time) is closed, so slow clients
    cannot hold descriptors for ever. (uvicorn times out only idle keep-alive
    connections, after a response.)"""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(HEADER_SECONDS, self._head_overdue)

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None:  # a whole head arrived: the request runs
            self._head_timer.cancel()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():  # the next request's head gets its own deadline
            self._head_timer.cancel()
            self._head_timer = self.loop.call_later(HEADER_SECONDS, self._head_overdue)

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_timer.cancel()
        super().connection_lost(exc)

    def _head_overdue(self) -> None:
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()


class BodyLimit:
    """ASGI middleware: a request body over ``MAX_BODY_BYTES`` gets 413 and is not read
    further (by its Content-Length, or as it streams in without one)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = next((v for k, v in scope["headers"] if k == b"content-length"), b"0")
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            await _error(413, f"the body is limited to {MAX_BODY_BYTES} bytes")(
                scope, receive, send
            )
            return
        seen = 0

        async def bounded() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > MAX_BODY_BYTES:
                raise HTTPException(413, f"the body is limited to {MAX_BODY_BYTES} bytes")
            return message

        await self.app(scope, bounded, send)


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handlers.

    ``uvicorn.Server.serve`` replaces the process's SIGINT and SIGTERM handlers while it
    runs; inside the controller, the controller owns them and stops the API through the
    ``stop`` event instead.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(
    app: FastAPI,
    listen: HostPort,
    stop: asyncio.Event,
    *,
    allow_remote: bool = False,
    control_socket: Path | None = None,
) -> None:
    """Serve ``app`` on ``listen`` in the running event loop until ``stop`` is set.

    Then stops accepting connections, lets open requests finish for up to
    ``SHUTDOWN_GRACE_SECONDS`` and returns within ``SHUTDOWN_WAIT_SECONDS``. Raises
    ``ConfigError`` (nothing bound) if ``listen`` is not a loopback address and
    ``allow_remote`` is False, or if the address cannot be resolved or bound. uvicorn
    logs at warning level and writes no access log, so no request line or header (the
    token) reaches the logs. With ``control_socket`` the same API is also served on that
    Unix socket (mode 0600, in a folder only this user may write), where the CLI talks to
    it (see ``control``); it is removed at the end.
    """
    sock = await _bind(listen, allow_remote=allow_remote)
    sockets = [sock]
    if control_socket is not None:
        try:
            sockets.append(bind_control_socket(control_socket))
        except ConfigError:
            sock.close()
            raise
    config = uvicorn.Config(
        app,
        log_config=None,  # log through the daemon's own logging setup
        log_level="warning",
        access_log=False,
        lifespan="off",
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
        http=_DeadlineProtocol,
        limit_concurrency=MAX_CONNECTIONS,  # beyond it uvicorn answers 503 at once
        timeout_keep_alive=IDLE_SECONDS,
    )
    server = _Server(config)
    try:
        serving = asyncio.create_task(_serve_socket(server, sockets, listen))
        stopping = asyncio.create_task(stop.wait())
        log.info("API listening on http://%s", listen)
        try:
            await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            server.should_exit = True
            await _finish(server, serving)
    finally:
        for each in sockets:
            each.close()
        if control_socket is not None:
            with contextlib.suppress(OSError):
                control_socket.unlink()


async def _serve_socket(server: _Server, sockets: list[socket.socket], listen: HostPort) -> None:
    try:
        await server.serve(sockets=sockets)
    except (SystemExit, OSError):
        # uvicorn calls sys.exit() when it cannot start: that must not end the controller.
        raise ConfigError([f"api.listen: the API could not start on {listen}"]) from None


async def _finish(server: _Server, serving: asyncio.Task[None]) -> None:
    done, _ = await asyncio.wait({serving}, timeout=SHUTDOWN_WAIT_SECONDS)
    if not done:
        log.warning("the API did not stop within %ss; closing it", SHUTDOWN_WAIT_SECONDS)
        server.force_exit = True
        serving.cancel()
        await asyncio.wait({serving}, timeout=1.0)
        return
    serving.result()


def bind_control_socket(path: Path) -> socket.socket:
    """The controller's Unix socket at ``path``, bound with mode 0600 in a folder of this
    user's that nobody else may write (made 0700 if missing). A stale socket file is
    replaced; a live one (another controller) is a ConfigError, as is any other file."""
    folder = path.parent
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise ConfigError(
            [f"api.socket: {folder} must be a folder of this user that others cannot write"]
        )
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise ConfigError([f"api.socket: {path} exists and is not a socket"])
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # left by a controller that did not stop cleanly
        else:
            raise ConfigError([f"api.socket: another controller listens on {path}"])
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # the socket is 0600 from the start, never wider
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise ConfigError([f"api.socket: cannot listen on {path}: {exc.strerror}"]) from None
    finally:
        os.umask(old)
    return sock


async def _bind(listen: HostPort, *, allow_remote: bool) -> socket.socket:
    """A socket bound to ``listen`` (not yet listening), after the loopback check."""
    loop = asyncio.get_running_loop()
    try:
        found = await loop.getaddrinfo(listen.host, listen.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError([f"api.listen: cannot resolve {listen.host}: {exc.strerror}"]) from None
    family, kind, proto, _, address = found[0]
    host = str(address[0])
    if not allow_remote and not ipaddress.ip_address(host).is_loopback:
        shown = str(listen) if host == listen.host else f"{listen} ({host})"
        raise ConfigError(
            [
                f"api.listen: {shown} is not a loopback address; the API speaks plain HTTP, so"
                " it listens on loopback only unless remote access is allowed explicitly"
            ]
        )
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        reason = (exc.strerror or type(exc).__name__).lower()
        raise ConfigError([f"api.listen: cannot listen on {listen}: {reason}"]) from None
    return sock
