"""The API's own replies beside the controller's snapshots: errors and liveness.

Every error is one JSON object ``{"error": "one line"}``, whoever answers it: a guard
before routing, a route, or FastAPI's own checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel


class ErrorReply(BaseModel):
    """Every error: 401 without the token, 404, 409 refused, 413, 422 invalid, 500, and
    503 from ``/history`` while the store does not answer."""

    error: str


class HealthReply(BaseModel):
    """``GET /health``: 200 ``alive``, or 503 ``stuck`` when the loop stopped cycling."""

    status: Literal["alive", "stuck"]


def error_reply(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error answers of a route, for its OpenAPI description."""
    return {code: {"model": ErrorReply} for code in codes}
