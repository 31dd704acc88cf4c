"""Network namespaces, links and the processes in them: what the lab's parts are made of."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from nfs_failover.errors import LabError
from nfs_failover.lab import system
from nfs_failover.pacing import Deadline


def exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def remove_link(name: str, wait: float = 3.0) -> None:
    """Delete the host end of a zone's veth pair; the kernel may already be removing it."""
    deadline = Deadline(wait)
    while link_exists(name):
        system.run(["ip", "link", "del", name], check=False)
        if deadline.passed():
            raise LabError(f"link {name} is still there {wait:g}s after deleting it")
        time.sleep(0.05)


def pids(name: str) -> set[int]:
    out = system.run(["ip", "netns", "pids", name], check=False)
    return {int(p) for p in out.split() if p.isdigit()}


def stop_pids(pids: set[int], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL whatever is still there after the grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = Deadline(grace)
        while pids and not deadline.passed():
            pids = {p for p in pids if Path(f"/proc/{p}").exists() and not is_zombie(p)}
            time.sleep(0.05)
        if not pids:
            return
    raise LabError(f"processes {sorted(pids)} did not exit after SIGKILL")


def is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True
