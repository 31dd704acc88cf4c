"""What answers a request before any route sees it: the bearer token (``TokenGate``) and
the body limit (``BodyLimit``), both ASGI middlewares around the app."""

from __future__ import annotations

import hmac

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nfs_failover.api.replies import error_reply

UNAUTHORIZED = "a bearer token is required"
MAX_BODY_BYTES = 64 * 1024  # an action's body is {"force": true}
_OPEN_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


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
        refusal = error_reply(401, UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})
        await refusal(scope, receive, send)


def _bearer_matches(header: bytes | None, expected: bytes) -> bool:
    """Whether ``header`` is ``Bearer <expected>`` (the scheme in any case, RFC 7235)."""
    if header is None:
        return False
    scheme, _, credentials = header.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    return hmac.compare_digest(credentials.strip(), expected)


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
            too_large = error_reply(413, f"the body is limited to {MAX_BODY_BYTES} bytes")
            await too_large(scope, receive, send)
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
