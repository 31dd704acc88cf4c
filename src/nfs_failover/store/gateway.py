"""Calls to etcd's JSON gateway (``/v3/kv/range``, ``/v3/kv/txn``, ``/v3/lease/...``,
``/v3/watch``): one ``requests`` session per member, a deadline on every call, and the
next member of the list when one cannot be reached.

Why its own small client rather than a library. The store needs, from Python and from
the event loop's worker threads: TLS with a client certificate, leases and their
keep-alive, transactions, and watches that resume from a revision after a dropped stream
or a compaction. ``etcd3`` does not import with a current protobuf; ``aetcd`` 1.0.0 has
no TLS and is unmaintained; ``etcd3gw`` speaks this same gateway and is maintained, but
sets no timeout on its calls, drops the compaction and cancel fields and the headers of
watch responses (so a watch cannot tell it missed events, nor resume at a revision), and
lets ``REQUESTS_CA_BUNDLE`` replace the configured CA. The gateway is plain JSON over
HTTP/1.1, which ``requests`` (already a dependency) does well; synchronous calls are
fine because every caller runs the store in a worker thread, never on the loop.

The sessions read nothing from the environment (``trust_env`` off: no proxy, no netrc,
no ``REQUESTS_CA_BUNDLE``): the only CA trusted and the only certificate sent are the
config's. A request that surely never reached a member (no connection, no TLS session)
goes to the next one, whatever it is. A write whose answer was lost after it was sent
is not repeated elsewhere: it raises ``StoreError`` saying it may have taken effect.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import requests
import urllib3.exceptions

from nfs_failover import netguard
from nfs_failover.config import EtcdTls, HostPort
from nfs_failover.errors import RpcConnectionError
from nfs_failover.pacing import Deadline
from nfs_failover.store.contract import StoreError

log = logging.getLogger(__name__)

UNAVAILABLE = 14  # gRPC's code for "try again", as the gateway reports it
NOT_FOUND = 5
OUT_OF_RANGE = 11  # a revision that was compacted away
# Refusals that come before a write was proposed to raft: another member may take it.
_NOT_PROPOSED = ("etcdserver: no leader", "etcdserver: not capable")


class EtcdError(StoreError):
    """A member refused a call; ``code`` is the gRPC status code it gave, if any."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def prefix_end(prefix: str) -> str:
    """The ``range_end`` that makes a range cover every key starting with ``prefix``."""
    raw = prefix.encode()
    return base64.b64encode(raw[:-1] + bytes([raw[-1] + 1])).decode()


@dataclass(frozen=True)
class Member:
    endpoint: HostPort
    url: str
    session: requests.Session

    def refused_here(self) -> str | None:
        """Why lab mode sends nothing to this member (see ``netguard``), or None."""
        if netguard.known_safe(self.endpoint.host):
            return None
        try:
            netguard.check(self.endpoint.host)
        except RpcConnectionError as exc:
            return str(exc)
        return None


class Gateway:
    """The members of one etcd cluster, tried in turn, the last one that answered first."""

    def __init__(
        self, endpoints: Sequence[HostPort], *, tls: EtcdTls | None, timeout: float
    ) -> None:
        scheme = "https" if tls is not None else "http"
        self.members = tuple(Member(e, f"{scheme}://{e}", _session(tls)) for e in endpoints)
        self.timeout = timeout
        self._first = 0
        self._lock = threading.Lock()

    def __str__(self) -> str:
        return "etcd://" + ",".join(str(m.endpoint) for m in self.members)

    def close(self) -> None:
        for member in self.members:
            member.session.close()

    def call(
        self,
        path: str,
        body: dict[str, Any],
        *,
        write: bool,
        deadline: Deadline | None = None,
    ) -> dict[str, Any]:
        """POST ``body`` to ``path`` (``/v3/kv/range``, ...) and return the answer, within
        ``deadline`` (the store's timeout by default). ``write``: the call changes state,
        so an answer lost after sending is not retried on another member."""
        deadline = deadline or Deadline(self.timeout)
        tried: list[str] = []
        for turn, member in enumerate(self._in_turn()):
            left = deadline.left()
            if left <= 0:
                break
            share = left / (len(self.members) - turn)
            refused = member.refused_here()
            if refused is not None:
                tried.append(refused)
                continue
            try:
                response = member.session.post(
                    member.url + path, json=body, timeout=(share, left if write else share)
                )
            except requests.RequestException as exc:
                if write and not _before_send(exc):
                    raise self._lost(member, path, exc) from exc
                tried.append(f"{member.url}: {_reason(exc)}")
                self._move_past(member)
                continue
            answer = _answer(response)
            error = answer.get("error")
            if error is None:
                self._answered(member)
                return answer
            message = str(answer.get("message") or error)
            code = answer.get("code")
            if code != UNAVAILABLE:
                raise EtcdError(f"{member.url}{path}: {message}", code=code)
            if write and message not in _NOT_PROPOSED:
                raise EtcdError(
                    f"{member.url}{path}: {message}; the write may have taken effect",
                    code=code,
                )
            tried.append(f"{member.url}: {message}")
            self._move_past(member)
        raise StoreError(
            f"{self}: no member answered {path} within {deadline.timeout:g}s"
            + (f" ({'; '.join(tried)})" if tried else "")
        )

    def stream(
        self, path: str, body: dict[str, Any], *, idle: float, deadline: Deadline
    ) -> tuple[Member, requests.Response]:
        """Open a streaming POST (a watch) on the first member that takes it; the stream
        then fails with a read timeout after ``idle`` seconds without a byte."""
        tried: list[str] = []
        for turn, member in enumerate(self._in_turn()):
            left = deadline.left()
            if left <= 0:
                break
            share = left / (len(self.members) - turn)
            refused = member.refused_here()
            if refused is not None:
                tried.append(refused)
                continue
            try:
                response = member.session.post(
                    member.url + path, json=body, timeout=(share, idle), stream=True
                )
            except requests.RequestException as exc:
                tried.append(f"{member.url}: {_reason(exc)}")
                self._move_past(member)
                continue
            if response.status_code == requests.codes.ok:
                self._answered(member)
                return member, response
            answer = _answer(response)
            response.close()
            tried.append(f"{member.url}: {answer.get('message') or answer.get('error')}")
            self._move_past(member)
        raise StoreError(f"{self}: no member opened {path} ({'; '.join(tried) or 'no time'})")

    def _in_turn(self) -> list[Member]:
        with self._lock:
            first = self._first
        return [*self.members[first:], *self.members[:first]]

    def _answered(self, member: Member) -> None:
        with self._lock:
            self._first = self.members.index(member)

    def _move_past(self, member: Member) -> None:
        with self._lock:
            if self.members[self._first] is member:
                self._first = (self._first + 1) % len(self.members)

    def _lost(self, member: Member, path: str, exc: requests.RequestException) -> StoreError:
        self._move_past(member)
        return StoreError(
            f"{member.url}{path}: no answer ({_reason(exc)}); the write may have taken effect"
        )


def _session(tls: EtcdTls | None) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no proxy, netrc or REQUESTS_CA_BUNDLE from the environment
    if tls is not None:
        session.verify = str(tls.ca_file)
        if tls.cert_file is not None and tls.key_file is not None:
            session.cert = (str(tls.cert_file), str(tls.key_file))
    return session


def _answer(response: requests.Response) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if response.status_code == requests.codes.ok and isinstance(answer, dict):
        return answer
    if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        # A streaming call's error: {"error": {"grpc_code": 14, "message": ...}}.
        inner = answer["error"]
        message = inner.get("message", "unknown error")
        return {"error": message, "message": message, "code": inner.get("grpc_code")}
    if isinstance(answer, dict) and ("error" in answer or "message" in answer):
        return {"error": answer.get("error", ""), **answer}
    shown = response.text[:200].strip() or "no body"
    return {"error": f"HTTP {response.status_code}: {shown}", "code": None}


def _before_send(exc: requests.RequestException) -> bool:
    """Whether the request surely never reached the member: no TCP connection was made, or
    its TLS handshake failed. Anything later may have been received and applied."""
    if isinstance(exc, requests.ConnectTimeout | requests.exceptions.SSLError):
        return True
    if isinstance(exc, requests.ConnectionError):
        reason = exc.args[0] if exc.args else None
        if isinstance(reason, urllib3.exceptions.MaxRetryError):
            reason = reason.reason
        return isinstance(reason, urllib3.exceptions.NewConnectionError)
    return False


def _reason(exc: requests.RequestException) -> str:
    """One short line for a failed request: urllib3 nests the cause in long messages."""
    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS failed ({_innermost(exc)})"
    if isinstance(exc, requests.ConnectTimeout):
        return "no connection within the deadline"
    if isinstance(exc, requests.ReadTimeout):
        return "no answer within the deadline"
    if _before_send(exc):
        return f"cannot connect ({_innermost(exc)})"
    return f"connection lost ({_innermost(exc)})"


def _innermost(exc: BaseException) -> str:
    seen: BaseException = exc
    while True:
        inner = getattr(seen, "reason", None) or (seen.args[0] if seen.args else None)
        if not isinstance(inner, BaseException) or inner is seen:
            break
        seen = inner
    text = str(seen)
    # urllib3 prefixes "<connection object at 0x...>: "; the errno text is what helps.
    return text.rsplit(">: ", 1)[-1][:160]
