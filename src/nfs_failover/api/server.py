"""Serving the API inside the controller's event loop: on loopback (unless remote access
is allowed explicitly) and on the CLI's Unix socket, with deadlines for slow clients and
a bounded stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from nfs_failover.config import HostPort
from nfs_failover.errors import ConfigError

log = logging.getLogger(__name__)

# uvicorn waits this long for open requests (an action may be running) once told to stop;
# serve() gives it a little more, then closes what is left.
SHUTDOWN_GRACE_SECONDS = 5
SHUTDOWN_WAIT_SECONDS = SHUTDOWN_GRACE_SECONDS + 2.0
MAX_CONNECTIONS = 256
HEADER_SECONDS = 10.0  # to send a request's line and headers
IDLE_SECONDS = 5  # a keep-alive connection between requests


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
