"""Lab mode's network rule: send only to loopback or to an address a lab namespace holds.

An address in 198.18.0.0/15 that no lab namespace holds is not safe: packets to it leave
the machine by the default route. With ``NFS_FAILOVER_LAB_ONLY=1`` (set by the drill, the
test suite and the benchmarks) every RPC connection and datagram first checks its target
here and is refused otherwise. The addresses held are read from the lab's namespaces
(``ip -n NS -j addr``), again at most once a second when a target is not among them.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import threading
import time
from pathlib import Path

from nfs_failover.errors import RpcConnectionError

ENV = "NFS_FAILOVER_LAB_ONLY"
NAMESPACE_PREFIX = "nfo"
REFRESH_SECONDS = 1.0

_lock = threading.Lock()
_held: frozenset[str] = frozenset()
_read_at = 0.0


def active() -> bool:
    return os.environ.get(ENV) == "1"


def known_safe(host: str) -> bool:
    """Whether ``host`` may be sent to without looking at the namespaces again."""
    if not active() or host in _held:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: only as a lab address


def check(host: str) -> None:
    """Raise RpcConnectionError unless ``host`` may be sent to (always, outside lab mode).
    May run ``ip`` (bounded): call it off the event loop unless ``known_safe``."""
    if known_safe(host) or host in _refresh():
        return
    raise RpcConnectionError(
        f"{host}: no lab namespace holds this address; lab mode ({ENV}=1) sends nothing there"
    )


def _refresh() -> frozenset[str]:
    global _held, _read_at  # noqa: PLW0603 - one process-wide cache, under its lock
    with _lock:
        if time.monotonic() - _read_at >= REFRESH_SECONDS:
            _held = frozenset(_lab_addresses())
            _read_at = time.monotonic()
        return _held


def _lab_addresses() -> set[str]:
    found: set[str] = set()
    try:
        names = [
            p.name for p in Path("/run/netns").iterdir() if p.name.startswith(NAMESPACE_PREFIX)
        ]
    except OSError:
        return found
    for name in names:
        try:
            done = subprocess.run(
                ["ip", "-n", name, "-j", "addr", "show"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            )
            for link in json.loads(done.stdout or "[]"):
                found.update(str(a["local"]) for a in link.get("addr_info", []) if "local" in a)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            continue
    return found
