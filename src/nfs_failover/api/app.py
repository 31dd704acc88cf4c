"""The FastAPI app of a running controller: its guards, its routes, and errors as JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from nfs_failover import __version__
from nfs_failover.api.guards import BodyLimit, TokenGate
from nfs_failover.api.metrics import add_metrics_route
from nfs_failover.api.replies import error_reply
from nfs_failover.api.routes import add_action_routes, add_read_routes
from nfs_failover.controller.handle import ControllerHandle


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
    add_read_routes(app, handle)
    add_metrics_route(app, handle)
    add_action_routes(app, handle)
    return app


def _answer_errors_as_json(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_reply(422, _validation_problems(exc.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error_reply(exc.status_code, str(exc.detail).lower(), headers=exc.headers)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises the exception after this answer, and uvicorn logs it.
        return error_reply(500, "internal error; the controller's log has the details")


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
