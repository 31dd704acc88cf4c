"""The CLI's side of the API: requests to the running controller over its Unix socket.

The token is sent only to a listener the CLI has authenticated: the socket's folder must
belong to root or to this user and be writable by nobody else, and once connected the
kernel says who holds the other end (``SO_PEERCRED``): root or this user, or the token
is not sent. A port on loopback proves nothing (any user may listen on 8741 while the
controller is down), so the CLI never sends the token there.

Written with the standard library's ``http.client`` on a socket connected here, because
an HTTP client library connects by itself and gives no way to check the peer before the
request (and its token) goes out.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import stat
import struct
from pathlib import Path
from typing import Any
from urllib.parse import quote

from nfs_failover.errors import NfsFailoverError

MAX_REPLY = 16 * 1024 * 1024


class ControlError(NfsFailoverError):
    """The controller could not be reached, was not trusted, or refused the request."""


def path_for(*parts: str, query: dict[str, str] | None = None) -> str:
    """An API path from its parts, each quoted whole (a volume named ``../pause`` stays
    one path segment)."""
    path = "/" + "/".join(quote(part, safe="") for part in parts)
    if query:
        path += "?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query.items())
    return path


def check_folder(path: Path) -> None:
    """The socket's folder must be a real folder of root or of this user, not writable by
    group or others (else anyone could have put their own socket there)."""
    folder = path.parent
    try:
        info = folder.lstat()
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise ControlError(
            f"no controller socket at {path} ({reason}); start one with `nfs-failover run`"
        ) from None
    trusted = {0, os.geteuid()}
    if not stat.S_ISDIR(info.st_mode) or info.st_uid not in trusted or info.st_mode & 0o022:
        raise ControlError(
            f"{folder}: not a folder that only root or you can write; the token is not sent"
        )


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


class _Connection(http.client.HTTPConnection):
    """An HTTP connection on a socket that is already connected (and checked)."""

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.sock = sock

    def connect(self) -> None:  # already connected: never open another socket
        return


def request(
    socket_path: Path,
    method: str,
    path: str,
    *,
    token: str | None = None,
    body: object = None,
    timeout: float = 10.0,
) -> Any:
    """The controller's JSON answer to ``method path``; ControlError with one line when no
    controller answers, it is not trusted (then nothing was sent), or it refuses."""
    check_folder(socket_path)
    # A controller that closed the connection before it read the request did nothing with
    # it: one more try then, on a fresh connection checked as the first was.
    for last in (False, True):
        try:
            return _request_once(socket_path, method, path, token=token, body=body, timeout=timeout)
        except _NotDelivered as exc:
            if last:
                raise ControlError(
                    f"the controller at {socket_path} did not answer: {exc}"
                ) from None
    raise AssertionError("unreachable")


class _NotDelivered(Exception):
    """The request could not be sent: the peer had closed the connection."""


def _request_once(
    socket_path: Path,
    method: str,
    path: str,
    *,
    token: str | None,
    body: object,
    timeout: float,
) -> Any:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(socket_path))
        except OSError as exc:
            raise ControlError(
                f"no controller answers at {socket_path} ({exc.strerror or exc}); "
                "start one with `nfs-failover run`"
            ) from None
        uid = peer_uid(sock)
        if uid not in {0, os.geteuid()}:
            raise ControlError(
                f"{socket_path} is held by uid {uid}, not by root or you; the token is not sent"
            )
        return _exchange(
            _Connection(sock, timeout),
            method=method,
            path=path,
            token=token,
            body=body,
            socket_path=socket_path,
        )
    finally:
        sock.close()


def _exchange(
    connection: _Connection,
    *,
    method: str,
    path: str,
    token: str | None,
    body: object,
    socket_path: Path,
) -> Any:
    headers = {"Connection": "close"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        connection.request(method, path, body=data, headers=headers)
    except (BrokenPipeError, ConnectionResetError) as exc:
        raise _NotDelivered(exc) from None
    except OSError as exc:
        raise ControlError(f"the controller at {socket_path} did not answer: {exc}") from None
    try:
        reply = connection.getresponse()
        raw = reply.read(MAX_REPLY)
    except (OSError, http.client.HTTPException) as exc:
        raise ControlError(f"the controller at {socket_path} did not answer: {exc}") from None
    try:
        answer = json.loads(raw)
    except ValueError:
        raise ControlError(
            f"the controller at {socket_path} answered HTTP {reply.status} with a body that is "
            "not JSON"
        ) from None
    if reply.status >= 400:
        detail = answer.get("error") if isinstance(answer, dict) else answer
        raise ControlError(str(detail or f"HTTP {reply.status}"))
    return answer
