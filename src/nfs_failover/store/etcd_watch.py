"""The etcd store's watch of the desired state: whole snapshots, each time one changed.

It reads every desired state once (which gives a revision), then watches the desired
prefix from the next revision over the gateway's streaming ``/v3/watch``. A stream that
drops (a member restarted, the connection died, ``WATCH_IDLE`` seconds of silence, which
is how a member that vanished without a word is noticed) is opened again, on whichever
member answers, from the revision after the last event seen: no event is missed and none
is applied twice. When that revision was compacted away the member says so
(``compact_revision``) and cancels the watch: everything is read again and the watch
starts over from that read's revision. Everything is also read again every ``RESYNC``
seconds, a safety net against events a server lost (etcd's own watch bugs, see
docs/production.md). Events at or below the revision already seen are dropped, so a
member that answers with older history cannot move the state back.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import requests

from nfs_failover.desired import VolumeDesired
from nfs_failover.pacing import Deadline
from nfs_failover.store.codec import parse_desired
from nfs_failover.store.contract import StoreError
from nfs_failover.store.gateway import Gateway, b64, prefix_end, unb64

log = logging.getLogger(__name__)

WATCH_IDLE = 10.0  # seconds of silence after which a stream is opened again
RESYNC = 300.0  # seconds between two whole reads, whatever the watch said
STOP_CHECK = 0.2  # how soon a stop closes an open stream


class _Compacted(Exception):
    """The revision to resume from is gone: read everything again."""


@dataclass
class _State:
    snapshot: dict[str, VolumeDesired] | None = None
    revision: int = 0
    read_at: float = field(default=-RESYNC)

    def due(self) -> bool:
        return self.snapshot is None or time.monotonic() - self.read_at >= RESYNC


ReadAll = Callable[[], tuple[dict[str, VolumeDesired], int]]


class DesiredWatch:
    """``watch_desired`` of one etcd store: ``read_all`` gives every desired state and the
    revision it was read at; ``prefix`` is the desired states' key prefix."""

    def __init__(self, gateway: Gateway, prefix: str, read_all: ReadAll) -> None:
        self.gateway = gateway
        self.prefix = prefix
        self.read_all = read_all

    def __call__(self, stop: threading.Event) -> Iterator[dict[str, VolumeDesired]]:
        state = _State()
        failures = 0
        while not stop.is_set():
            try:
                if state.due():
                    snapshot, revision = self.read_all()
                    state.read_at, state.revision = time.monotonic(), revision
                    if snapshot != state.snapshot:
                        state.snapshot = snapshot
                        yield dict(snapshot)
                for _ in self._follow(state, stop):
                    yield dict(state.snapshot or {})
                failures = 0
            except _Compacted as exc:
                log.info("desired-state watch: %s; reading everything again", exc)
                state.read_at = -RESYNC
            except StoreError as exc:
                failures += 1
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(level, "desired-state watch: %s (trying again)", exc)
                stop.wait(min(0.2 * 2**failures, 5.0))

    def _follow(self, state: _State, stop: threading.Event) -> Iterator[None]:
        """Follow the stream until it ends, a whole read is due, or ``stop``; one item per
        message that changed the snapshot."""
        body = {
            "create_request": {
                "key": b64(self.prefix),
                "range_end": prefix_end(self.prefix),
                "start_revision": state.revision + 1,
            }
        }
        deadline = Deadline(self.gateway.timeout)
        member, response = self.gateway.stream(
            "/v3/watch", body, idle=WATCH_IDLE, deadline=deadline
        )
        done = threading.Event()
        threading.Thread(
            target=_close_on_stop, args=(stop, done, response), name="watch-closer", daemon=True
        ).start()
        try:
            for line in response.iter_lines():
                if stop.is_set():
                    return
                if line and self._apply(state, json.loads(line), member.url):
                    yield None
                if state.due():
                    return
        except requests.RequestException as exc:  # idle, reset, or closed by the stop
            if not stop.is_set():
                log.debug("desired-state watch on %s ended: %s", member.url, exc)
        except ValueError as exc:
            raise StoreError(f"{member.url}/v3/watch: unreadable message ({exc})") from exc
        finally:
            done.set()
            response.close()

    def _apply(self, state: _State, message: dict[str, Any], url: str) -> bool:
        """Apply one watch message to ``state``; whether the snapshot changed."""
        if "error" in message:
            error = message["error"]
            text = error.get("message", error) if isinstance(error, dict) else error
            raise StoreError(f"{url}/v3/watch: {text}")
        result = message.get("result", {})
        compacted = int(result.get("compact_revision", 0))
        if compacted:
            raise _Compacted(f"revision {state.revision + 1} compacted (now {compacted})")
        if result.get("canceled"):
            raise StoreError(f"{url}/v3/watch: canceled ({result.get('cancel_reason', '')})")
        snapshot = dict(state.snapshot or {})
        for event in result.get("events", ()):
            kv = event.get("kv", {})
            revision = int(kv.get("mod_revision", 0))
            if revision <= state.revision:  # seen already: never move the state back
                continue
            state.revision = revision
            volume = unquote(unb64(kv["key"]).removeprefix(self.prefix))
            if event.get("type") == "DELETE":
                snapshot.pop(volume, None)
                continue
            try:
                snapshot[volume] = parse_desired(volume, unb64(kv.get("value", "")))
            except StoreError as exc:  # as all_desired: left out, the others go on
                log.error("%s", exc)
                snapshot.pop(volume, None)
        if snapshot == state.snapshot:
            return False
        state.snapshot = snapshot
        return True


def _close_on_stop(stop: threading.Event, done: threading.Event, response: Any) -> None:
    """Shut the stream's socket as soon as ``stop`` is set: a read blocked in it then
    returns at once, instead of at the next idle timeout."""
    while not done.is_set():
        if stop.wait(STOP_CHECK):
            sock = getattr(getattr(response.raw, "connection", None), "sock", None)
            if isinstance(sock, socket.socket):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            return
