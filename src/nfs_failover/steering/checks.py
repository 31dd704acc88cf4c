"""The active check of one mount: a statvfs that asks its server, within a deadline.

Owns what a check found (``CheckResult``) and the rule of one check per mount at a time.
The statvfs runs in a child abandoned at its deadline (steering/children.py says why).
Nothing here looks at a path that is not mounted: a stat there would make autofs mount it.
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from nfs_failover.steering.children import RUNNER, MountKey, seconds_text
from nfs_failover.steering.machine import Machine, Ran
from nfs_failover.steering.mountinfo import MOUNTINFO, MountInfo, read_mounts
from nfs_failover.steering.this_host import ThisHost

__all__ = ["CheckResult", "CheckStatus", "check_mount"]


class CheckStatus(StrEnum):
    OK = "ok"
    HUNG = "hung"  # no answer by the deadline
    STALE = "stale"  # ESTALE
    ERROR = "error"  # another errno, or a child that failed
    NOT_MOUNTED = "not mounted"  # nothing mounted there: not checked


@dataclass(frozen=True)
class CheckResult:
    path: str
    status: CheckStatus
    detail: str  # a sentence, such as "statvfs did not return within 1s"
    latency: float | None = None  # seconds the statvfs took, when it returned
    errno_name: str | None = None  # such as "ESTALE", when it failed
    pid: int | None = None  # the checking child (for a hung mount: the stuck one)


def _check_result(path: str, ran: Ran, timeout: float) -> CheckResult:
    """The child's report (see ``mount_check_child``) as a result."""
    if ran.returncode is None:
        detail = f"statvfs did not return within {seconds_text(timeout)}"
        return CheckResult(path, CheckStatus.HUNG, detail, pid=ran.pid)
    words = ran.stdout.split()
    if ran.returncode == 0 and len(words) == 2 and words[0] == "ok":
        latency = float(words[1])
        detail = f"statvfs answered in {seconds_text(latency)}"
        return CheckResult(path, CheckStatus.OK, detail, latency=latency, pid=ran.pid)
    if ran.returncode == 0 and len(words) == 3 and words[0] == "error" and words[1].isdigit():
        name = words[2]
        status = CheckStatus.STALE if int(words[1]) == errno.ESTALE else CheckStatus.ERROR
        detail = f"statvfs failed with {name} ({os.strerror(int(words[1]))})"
        return CheckResult(path, status, detail, errno_name=name, pid=ran.pid)
    last = (ran.stderr.strip().splitlines() or ["no output"])[-1]
    detail = f"the check process exited with status {ran.returncode}: {last}"
    return CheckResult(path, CheckStatus.ERROR, detail, pid=ran.pid)


def _mount_at(path: str, machine: Machine) -> MountInfo | None:
    """The topmost mount at ``path`` (the last listed), or None."""
    found = [mount for mount in read_mounts(machine=machine) if mount.mount_point == path]
    return found[-1] if found else None


def check_mount(
    path: str | os.PathLike[str],
    *,
    timeout: float,
    mountinfo: Path = MOUNTINFO,
    machine: Machine | None = None,
) -> CheckResult:
    """Ask the server behind the mount at ``path`` for its statvfs, within ``timeout`` s.

    The statvfs runs in a child process, abandoned at the deadline (see
    steering/children.py). One check per mount at a time: while an earlier check of the
    same mount is stuck, the answer is HUNG at once and no new child is started. A path
    that is not a mount point in ``mountinfo`` is not checked at all (NOT_MOUNTED). Raises
    ``SteeringError`` if mountinfo cannot be read.
    """
    RUNNER.reap()
    machine = machine or ThisHost(mountinfo)
    target = os.path.abspath(os.fspath(path))  # no resolve(): it would stat the path
    mount = _mount_at(target, machine)
    if mount is None:
        detail = "nothing is mounted there; not checked, since a stat would trigger autofs"
        return CheckResult(target, CheckStatus.NOT_MOUNTED, detail)
    # A mount is known by its id as well: after a lazy unmount, autofs mounts the same
    # path anew, and a check stuck in the old mount must not stand for the new one. (The
    # old id is not reused while the stuck check holds the old mount.)
    key = (target, mount.mount_id)
    with RUNNER.gate(key) as lock:
        if not lock.acquire(timeout=max(timeout, 0.0)):
            detail = f"an earlier check has not returned within {seconds_text(timeout)}"
            return CheckResult(target, CheckStatus.HUNG, detail)
        try:
            return _check_once(target, key, timeout, machine)
        finally:
            lock.release()


def _check_once(target: str, key: MountKey, timeout: float, machine: Machine) -> CheckResult:
    stuck = RUNNER.stuck(key)
    if stuck is not None:
        pid, since = stuck
        age = seconds_text(time.monotonic() - since)
        detail = f"an earlier check (pid {pid}) has been stuck for {age}; none started"
        return CheckResult(target, CheckStatus.HUNG, detail, pid=pid)
    try:
        ran = machine.check(target, timeout, key)
    except OSError as exc:
        detail = f"the check process could not start: {exc.strerror or exc}"
        return CheckResult(target, CheckStatus.ERROR, detail)
    return _check_result(target, ran, timeout)
