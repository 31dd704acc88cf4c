"""The NFS mounts of our volumes on this client: find them, check them, heal them.

Owns reading ``/proc/self/mountinfo``, mapping each mount under the autofs mount root to
its volume and replica, the active check of a mount, the verdict on it, and the lazy
unmount after which autofs mounts an offered replica on the next access.

Why a child process, and why abandon it: a ``statvfs`` on a hard NFS mount of a dead
server does not return, and SIGKILL may not end the caller either: a FUSE request already
read by its daemon leaves a killed caller in state D until the daemon answers or dies
(seen in tests/steering), and an NFS client has waits of the same kind. A thread doing
that check could never be stopped, and ``subprocess.run(timeout=)`` or ``communicate()``
would kill the child and then *wait* for it, hanging the agent with it. So each check is
a short-lived child process that the agent polls against a deadline; at the deadline it
is SIGKILLed and abandoned, never waited for. Abandoned children are reaped later with
``waitpid(WNOHANG)`` (``reap_abandoned``, also run at every check), and while one is
alive no other check of the same mount is started: the mount is reported hung at once,
so a dead server costs one stuck process per mount, not one per cycle.

Nothing here looks at a key that is not mounted: a stat there would make autofs mount it.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import logging
import os
import re
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from pathlib import Path, PurePosixPath

from nfs_failover.config import Config, Replica, Volume
from nfs_failover.desired import VolumeDesired
from nfs_failover.durations import format_duration
from nfs_failover.errors import SteeringError
from nfs_failover.steering.autofs_files import reload_automount
from nfs_failover.steering.machine import Machine, Ran

__all__ = [
    "MOUNTINFO",
    "NFS_TYPES",
    "CheckResult",
    "CheckStatus",
    "HealAction",
    "HealOutcome",
    "HealPolicy",
    "Holder",
    "ManagedMount",
    "MountInfo",
    "MountState",
    "MountTable",
    "SkippedLine",
    "ThisHost",
    "Verdict",
    "abandoned_count",
    "check_mount",
    "classify",
    "find_holders",
    "heal",
    "managed_mounts",
    "mount_root",
    "nfs_mounts",
    "parse_mountinfo",
    "read_mounts",
    "reap_abandoned",
    "survey",
]

log = logging.getLogger(__name__)

MOUNTINFO = Path("/proc/self/mountinfo")
PROC = Path("/proc")
NFS_TYPES = frozenset({"nfs", "nfs4"})
MAX_MOUNTINFO_BYTES = 16 * 1024 * 1024  # about 100,000 mounts
MAX_LINE_BYTES = 64 * 1024  # two escaped PATH_MAX paths and their options
MAX_OUTPUT_BYTES = 4 * 1024 * 1024  # kept of a child's stdout or stderr
CHILD = Path(__file__).with_name("mount_check_child.py")
_CHILD_ARGV = (sys.executable, "-I", "-S", str(CHILD))  # isolated: stdlib only, no site
# --no-canonicalize: canonicalizing stats the path, which hangs on a dead server;
# --internal-only: no umount.nfs helper, which may try to reach the server.
UMOUNT = ("umount", "--lazy", "--no-canonicalize", "--internal-only")
# A mount of a replica no longer offered (fenced, or the clients moved on) is also forced:
# the kernel aborts the requests in flight on it, so processes stuck on a dead or fenced
# server get EIO at once and can retry through the automount, instead of waiting forever.
# Nothing they wait for was acknowledged: a write is owed only once fsync returned.
UMOUNT_FORCED = (*UMOUNT[:2], "--force", *UMOUNT[2:])


# -- mountinfo -----------------------------------------------------------------------------


@dataclass(frozen=True)
class MountInfo:
    """One line of mountinfo (proc(5)), with its paths unescaped."""

    mount_id: int
    parent_id: int
    major: int
    minor: int
    root: str
    mount_point: str
    options: tuple[str, ...]
    optional_fields: tuple[str, ...]
    fstype: str
    source: str
    super_options: tuple[str, ...]

    @property
    def is_nfs(self) -> bool:
        return self.fstype in NFS_TYPES


@dataclass(frozen=True)
class SkippedLine:
    """A mountinfo line that could not be read, and why."""

    number: int
    reason: str
    text: str  # the line's start, for the log


@dataclass(frozen=True)
class MountTable:
    mounts: tuple[MountInfo, ...]
    skipped: tuple[SkippedLine, ...]


_ESCAPE = re.compile(rb"\\([0-7]{3})")


def _unescape(field: bytes) -> str:
    """``\\040`` and friends back to their bytes; undecodable bytes kept as surrogates."""
    raw = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 8) & 0xFF]), field)
    return os.fsdecode(raw)


def _parse_line(line: bytes) -> MountInfo | str:
    """The mount a line describes, or the reason it cannot be read."""
    fields = line.split(b" ")
    try:
        separator = fields.index(b"-", 6)
    except ValueError:
        return 'no "-" separator after the six leading fields'
    tail = fields[separator + 1 :]
    if len(tail) != 3:
        return f"expected 3 fields after the separator, got {len(tail)}"
    mount_id, parent_id, device, root, mount_point, options = fields[:6]
    major, colon, minor = device.partition(b":")
    numbers = (mount_id, parent_id, major, minor)
    if not colon or not all(n.isdigit() and len(n) <= 20 for n in numbers):
        return "mount id, parent id or major:minor is not a number"
    point = _unescape(mount_point)
    if not point.startswith("/"):
        return "mount point is not an absolute path"
    fstype, source, super_options = tail
    return MountInfo(
        mount_id=int(mount_id),
        parent_id=int(parent_id),
        major=int(major),
        minor=int(minor),
        root=_unescape(root),
        mount_point=point,
        options=tuple(_unescape(options).split(",")),
        optional_fields=tuple(_unescape(f) for f in fields[6:separator] if f),
        fstype=_unescape(fstype),
        source=_unescape(source),
        super_options=tuple(_unescape(super_options).split(",")),
    )


def parse_mountinfo(data: bytes) -> MountTable:
    """Every mount in mountinfo text; a malformed line is skipped with its reason."""
    mounts: list[MountInfo] = []
    skipped: list[SkippedLine] = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        shown = os.fsdecode(line[:200])
        if len(line) > MAX_LINE_BYTES:
            skipped.append(SkippedLine(number, f"longer than {MAX_LINE_BYTES} bytes", shown))
            continue
        parsed = _parse_line(line.rstrip(b"\r"))
        if isinstance(parsed, str):
            skipped.append(SkippedLine(number, parsed, shown))
        else:
            mounts.append(parsed)
    return MountTable(tuple(mounts), tuple(skipped))


def _read_mountinfo(mountinfo: Path) -> bytes:
    try:
        with mountinfo.open("rb") as file:
            return file.read(MAX_MOUNTINFO_BYTES + 1)
    except OSError as exc:
        raise SteeringError(f"cannot read {mountinfo}: {exc.strerror or exc}") from None


def read_mounts(mountinfo: Path = MOUNTINFO, *, machine: Machine | None = None) -> list[MountInfo]:
    """All mounts in ``mountinfo`` (or in the mount table of ``machine``); never contacts a
    server.

    Malformed lines are logged and skipped. Raises ``SteeringError`` if the table cannot be
    read; reads at most ``MAX_MOUNTINFO_BYTES`` (a longer table is logged as cut short).
    """
    data = machine.read_mountinfo() if machine else _read_mountinfo(mountinfo)
    if machine:
        mountinfo = Path(f"{machine.name}:{MOUNTINFO}")
    if len(data) > MAX_MOUNTINFO_BYTES:
        log.warning("%s: longer than %d bytes; the rest is not read", mountinfo, len(data) - 1)
        data = data[: data.rfind(b"\n", 0, MAX_MOUNTINFO_BYTES) + 1]
    table = parse_mountinfo(data)
    for line in table.skipped:
        log.warning("%s: line %d skipped: %s: %r", mountinfo, line.number, line.reason, line.text)
    return list(table.mounts)


def nfs_mounts(mounts: Iterable[MountInfo]) -> list[MountInfo]:
    """The NFS mounts (``nfs``, ``nfs4``) among ``mounts``."""
    return [mount for mount in mounts if mount.is_nfs]


# -- our volumes' mounts ---------------------------------------------------------------------


@dataclass(frozen=True)
class ManagedMount:
    """A volume's autofs key and what is mounted there: a replica, an unknown server
    (``replica`` None), or nothing (``mount`` None)."""

    volume: Volume
    mount: MountInfo | None
    replica: Replica | None

    @property
    def key(self) -> str:
        return self.volume.map_key


def _export_id(source: str) -> tuple[str, str] | None:
    """(host, path) of ``host:/path`` or ``[v6]:/path``, normalised for comparison."""
    if source.startswith("["):
        end = source.find("]:")
        if end < 0:
            return None
        host, path = source[1:end], source[end + 2 :]
    else:
        host, colon, path = source.partition(":")
        if not colon:
            return None
    if not host or not path.startswith("/"):
        return None
    path = re.sub("/+", "/", path).rstrip("/") or "/"
    try:
        host = ipaddress.ip_address(host).compressed
    except ValueError:
        host = host.lower().rstrip(".")
    return host, path


def _replica_for(volume: Volume, source: str) -> Replica | None:
    wanted = _export_id(source)
    if wanted is None:
        return None
    return next((r for r in volume.replicas if _export_id(str(r.export)) == wanted), None)


def mount_root(config: Config) -> PurePosixPath:
    """The directory the volumes' keys are mounted under, as the kernel shows it."""
    return PurePosixPath(config.autofs.under_root(config.autofs.mount_root))


def managed_mounts(config: Config, mounts: Iterable[MountInfo]) -> list[ManagedMount]:
    """The NFS mounts at a volume's key under the mount root, with the replica each one
    was mounted from (None: an unknown server), in mountinfo order."""
    root = mount_root(config)
    by_key = {volume.map_key: volume for volume in config.volumes}
    found = []
    for mount in nfs_mounts(mounts):
        point = PurePosixPath(mount.mount_point)
        volume = by_key.get(point.name)
        if point.parent != root or volume is None:
            continue
        found.append(ManagedMount(volume, mount, _replica_for(volume, mount.source)))
    return found


# -- the active check ------------------------------------------------------------------------


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


@dataclass
class _Gate:
    lock: threading.Lock
    users: int = 0  # callers holding or waiting for the lock; the gate goes at zero


@dataclass
class _Abandoned:
    process: subprocess.Popen[bytes]
    mount: tuple[str, int] | None  # (path, mount id) of a check; None for an umount
    since: float


_state_lock = threading.Lock()
_abandoned: dict[int, _Abandoned] = {}  # pid -> the child given up on, until reaped
_stuck: dict[tuple[str, int], int] = {}  # (path, mount id) -> pid of its stuck check
_gates: dict[tuple[str, int], _Gate] = {}  # (path, mount id) -> one check at a time


def reap_abandoned() -> list[int]:
    """Reap the abandoned children that have ended (``waitpid`` with WNOHANG); their pids."""
    reaped = []
    with _state_lock:
        for pid, child in list(_abandoned.items()):
            try:
                ended, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # reaped by someone else: gone all the same
                ended, status = pid, 0
            if ended == 0:
                continue
            child.process.returncode = os.waitstatus_to_exitcode(status)
            del _abandoned[pid]
            if child.mount is not None and _stuck.get(child.mount) == pid:
                del _stuck[child.mount]
            reaped.append(pid)
    return reaped


def abandoned_count() -> int:
    """How many children were given up on and have not been reaped yet."""
    with _state_lock:
        return len(_abandoned)


def _abandon(process: subprocess.Popen[bytes], mount: tuple[str, int] | None) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    for pipe in (process.stdout, process.stderr):
        if pipe is not None:
            pipe.close()
    with _state_lock:
        _abandoned[process.pid] = _Abandoned(process, mount, time.monotonic())
        if mount is not None:
            _stuck[mount] = process.pid


def _wait_for_exit(process: subprocess.Popen[bytes], deadline: float) -> bool:
    """Whether ``process`` ended (and was reaped) by ``deadline``; never waits past it."""
    try:
        pidfd = os.pidfd_open(process.pid)
    except OSError:
        pidfd = -1
    try:
        if pidfd >= 0:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            remaining = deadline - time.monotonic()
            if remaining > 0 and poller.poll(remaining * 1000) and process.poll() is not None:
                return True
        # Without a pidfd (an old kernel): poll with short sleeps, bounded by the deadline.
        while process.poll() is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(remaining, 0.01))
        return True
    finally:
        if pidfd >= 0:
            os.close(pidfd)


def _read_until_closed(process: subprocess.Popen[bytes], deadline: float) -> dict[int, bytes]:
    """The child's stdout and stderr (by fd), read as they come, so that a child with much
    to say never blocks on a full pipe; until both close or the deadline passes."""
    assert process.stdout is not None and process.stderr is not None
    output = {pipe.fileno(): bytearray() for pipe in (process.stdout, process.stderr)}
    poller = select.poll()
    for fd in output:
        poller.register(fd, select.POLLIN)
    open_fds = set(output)
    while open_fds:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        for fd, _ in poller.poll(remaining * 1000):
            chunk = os.read(fd, 65536)
            if not chunk:
                poller.unregister(fd)
                open_fds.discard(fd)
            elif len(output[fd]) < MAX_OUTPUT_BYTES:  # beyond it, read and drop
                output[fd] += chunk[: MAX_OUTPUT_BYTES - len(output[fd])]
    return {fd: bytes(data) for fd, data in output.items()}


def _run_bounded(argv: Sequence[str], timeout: float, mount: tuple[str, int] | None) -> Ran:
    """Run ``argv`` until it ends or ``timeout`` passes; at the deadline SIGKILL it and
    abandon it to the reaper. Never blocks past the deadline; raises OSError if ``argv``
    cannot be started."""
    deadline = time.monotonic() + timeout
    process = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd="/",  # never inherit a working directory inside a mount
    )
    assert process.stdout is not None and process.stderr is not None
    output = _read_until_closed(process, deadline)
    if not _wait_for_exit(process, deadline):
        _abandon(process, mount)
        return Ran(None, "", "", process.pid)
    out, err = output[process.stdout.fileno()], output[process.stderr.fileno()]
    process.stdout.close()
    process.stderr.close()
    return Ran(process.returncode, os.fsdecode(out), os.fsdecode(err), process.pid)


def _seconds(seconds: float) -> str:
    return format_duration(timedelta(seconds=round(seconds, 4)))


def _check_result(path: str, ran: Ran, timeout: float) -> CheckResult:
    """The child's report (see ``mount_check_child``) as a result."""
    if ran.returncode is None:
        detail = f"statvfs did not return within {_seconds(timeout)}"
        return CheckResult(path, CheckStatus.HUNG, detail, pid=ran.pid)
    words = ran.stdout.split()
    if ran.returncode == 0 and len(words) == 2 and words[0] == "ok":
        latency = float(words[1])
        detail = f"statvfs answered in {_seconds(latency)}"
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


@contextlib.contextmanager
def _gate(mount: tuple[str, int]) -> Iterator[threading.Lock]:
    """The lock that lets one check of ``mount`` run at a time (not yet acquired)."""
    with _state_lock:
        gate = _gates.setdefault(mount, _Gate(threading.Lock()))
        gate.users += 1
    try:
        yield gate.lock
    finally:
        with _state_lock:
            gate.users -= 1
            if gate.users == 0:
                del _gates[mount]


def check_mount(
    path: str | os.PathLike[str],
    *,
    timeout: float,
    mountinfo: Path = MOUNTINFO,
    machine: Machine | None = None,
) -> CheckResult:
    """Ask the server behind the mount at ``path`` for its statvfs, within ``timeout`` s.

    The statvfs runs in a child process, abandoned at the deadline (see the module's
    docstring). One check per mount at a time: while an earlier check of the same mount
    is stuck, the answer is HUNG at once and no new child is started. A path that is not
    a mount point in ``mountinfo`` is not checked at all (NOT_MOUNTED). Raises
    ``SteeringError`` if mountinfo cannot be read.
    """
    reap_abandoned()
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
    with _gate(key) as lock:
        if not lock.acquire(timeout=max(timeout, 0.0)):
            detail = f"an earlier check has not returned within {_seconds(timeout)}"
            return CheckResult(target, CheckStatus.HUNG, detail)
        try:
            return _check_once(target, key, timeout, machine)
        finally:
            lock.release()


def _check_once(target: str, key: tuple[str, int], timeout: float, machine: Machine) -> CheckResult:
    with _state_lock:
        stuck = _stuck.get(key)
        since = _abandoned[stuck].since if stuck is not None else 0.0
    if stuck is not None:
        age = _seconds(time.monotonic() - since)
        detail = f"an earlier check (pid {stuck}) has been stuck for {age}; none started"
        return CheckResult(target, CheckStatus.HUNG, detail, pid=stuck)
    try:
        ran = machine.check(target, timeout, key)
    except OSError as exc:
        detail = f"the check process could not start: {exc.strerror or exc}"
        return CheckResult(target, CheckStatus.ERROR, detail)
    return _check_result(target, ran, timeout)


# -- verdicts --------------------------------------------------------------------------------


class Verdict(StrEnum):
    OK = "ok"
    HUNG = "hung"
    STALE = "stale"
    WRONG_REPLICA = "wrong replica"  # mounted from a replica not offered now (fenced, ...)
    FALLBACK = "fallback"  # from an offered replica, while the preferred one is up again
    NOT_MOUNTED = "not mounted"  # nothing to do: autofs mounts it on the next access
    UNKNOWN_SERVER = "unknown server"  # mounted from no replica of the volume
    ERROR = "error"  # the check failed otherwise (EIO, EACCES, ...): no proof of a stuck mount


@dataclass(frozen=True)
class MountState:
    """The verdict on one volume's key, with the sentence that explains it."""

    volume: str
    key: str
    verdict: Verdict
    reason: str
    mount_point: str | None = None
    mount_id: int | None = None
    source: str | None = None
    replica: str | None = None
    check: CheckResult | None = None
    # The mounted replica is the map's first choice (the only one offered, or the one its
    # weights prefer): a new mount of the key would try the same server first.
    first_choice: bool = False


_FROM_CHECK = {
    CheckStatus.OK: Verdict.OK,
    CheckStatus.HUNG: Verdict.HUNG,
    CheckStatus.STALE: Verdict.STALE,
    CheckStatus.ERROR: Verdict.ERROR,
    CheckStatus.NOT_MOUNTED: Verdict.NOT_MOUNTED,
}
_CHECK_MEANS = {
    CheckStatus.OK: "",
    CheckStatus.HUNG: ": the mount is hung",
    CheckStatus.STALE: ": the server no longer knows the mount's file handle",
    CheckStatus.ERROR: "",
    CheckStatus.NOT_MOUNTED: "",
}


def _alternatives(desired: VolumeDesired) -> str:
    if not desired.offered:
        return "no replica is offered now"
    return f"clients must use {' or '.join(desired.offered)}"


def classify(
    managed: ManagedMount,
    check: CheckResult | None,
    desired: VolumeDesired,
    up: frozenset[str] = frozenset(),
) -> MountState:
    """The verdict on a volume's key from what is mounted there and how its check went.

    ``check`` may be None where it is not needed (nothing mounted, an unknown server, a
    replica not offered); an offered replica without a check is a bug (ValueError).
    ``up``: the replicas this client saw up at its last probe. A sound mount of an offered
    replica other than the preferred (active) one is a fallback when the preferred one is
    among them: a read-only volume's clients go back to the source after a failback.
    """
    volume = managed.volume
    if desired.volume != volume.name:
        raise ValueError(f"desired state of {desired.volume} given for volume {volume.name}")
    mount, replica = managed.mount, managed.replica

    def state(verdict: Verdict, reason: str) -> MountState:
        return MountState(
            volume=volume.name,
            key=managed.key,
            verdict=verdict,
            reason=reason,
            mount_point=mount.mount_point if mount else None,
            mount_id=mount.mount_id if mount else None,
            source=mount.source if mount else None,
            replica=replica.name if replica else None,
            check=check,
            first_choice=replica is not None and replica.name == desired.active,
        )

    if mount is None:
        return state(Verdict.NOT_MOUNTED, f"{managed.key} is not mounted: nothing to do")
    if replica is None:
        text = f"mounted from {mount.source}, which is no replica of volume {volume.name}"
        return state(Verdict.UNKNOWN_SERVER, text)
    if replica.name not in desired.offered:
        why = "fenced" if replica.name in desired.fenced else "not offered"
        text = f"mounted from {replica.name}, which is {why}; {_alternatives(desired)}"
        return state(Verdict.WRONG_REPLICA, text)
    if check is None:
        raise ValueError(f"{mount.mount_point} is mounted from an offered replica: check it")
    if check.status is CheckStatus.NOT_MOUNTED:
        return state(Verdict.NOT_MOUNTED, f"{managed.key} was unmounted before its check")
    text = f"mounted from {replica.name}; {check.detail}{_CHECK_MEANS[check.status]}"
    if check.status is CheckStatus.OK and replica.name != desired.active and desired.active in up:
        text = (f"mounted from {replica.name}, a fallback, while the preferred {desired.active} "
                "answers again")  # fmt: skip
        return state(Verdict.FALLBACK, text)
    return state(_FROM_CHECK[check.status], text)


def survey(
    config: Config,
    desired: Mapping[str, VolumeDesired],
    *,
    timeout: float,
    mountinfo: Path = MOUNTINFO,
    machine: Machine | None = None,
    up: frozenset[str] = frozenset(),
) -> list[MountState]:
    """The verdict on every key of the volumes in ``desired``, one check after another.

    Only mounts from an offered replica are checked (the others are wrong whatever the
    check says), and never a key that is not mounted. Volumes without a desired state are
    left out.
    """
    machine = machine or ThisHost(mountinfo)
    found = managed_mounts(config, read_mounts(machine=machine))
    states = []
    for volume in config.volumes:
        wanted = desired.get(volume.name)
        if wanted is None:
            continue
        mine = [managed for managed in found if managed.volume.name == volume.name]
        if not mine:
            states.append(classify(ManagedMount(volume, None, None), None, wanted))
        for managed in mine:
            check = None
            if managed.mount and managed.replica and managed.replica.name in wanted.offered:
                point = managed.mount.mount_point
                check = check_mount(point, timeout=timeout, machine=machine)
            states.append(classify(managed, check, wanted, up))
    return states


# -- healing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class HealPolicy:
    report_only: bool = False  # decide and report, but unmount nothing
    umount_timeout: float = 5.0  # seconds; umount -l does not wait for the server
    scan_timeout: float = 5.0  # seconds to find the processes using the mount


class HealOutcome(StrEnum):
    NOTHING = "nothing to do"
    WOULD_UNMOUNT = "would unmount"  # report-only policy
    UNMOUNTED = "unmounted"
    ALREADY_GONE = "already gone"
    FAILED = "failed"


@dataclass(frozen=True)
class Holder:
    """A process using something under a mount point, and how (``cwd``, ``fd 3``, ...)."""

    pid: int
    command: str
    uses: tuple[str, ...]


@dataclass(frozen=True)
class HealAction:
    """What ``heal`` did or would do, with the sentence for the log and the journal."""

    volume: str
    key: str
    verdict: Verdict
    outcome: HealOutcome
    reason: str
    mount_point: str | None = None
    holders: tuple[Holder, ...] = ()


# Which verdicts heal unmounts; for the rest, why it leaves the mount alone.
_LEFT_ALONE = {
    Verdict.OK: "no action",
    Verdict.NOT_MOUNTED: "no action",
    Verdict.UNKNOWN_SERVER: "no action (a mount from an unknown server is only reported)",
    Verdict.ERROR: "no action (a failed check is no proof that the mount is stuck)",
}
HEALED = frozenset({Verdict.HUNG, Verdict.STALE, Verdict.WRONG_REPLICA, Verdict.FALLBACK})


def find_holders(
    mount_point: str,
    *,
    timeout: float = 5.0,
    proc: Path = PROC,
    machine: Machine | None = None,
    mount_id: int | None = None,
) -> tuple[Holder, ...]:
    """The processes whose cwd, root, open files or mapped files lie under ``mount_point``
    (or, given ``mount_id``, whose cwd, root or open files are on that mount: so they are
    found after a lazy unmount too).

    Only links are read (``readlink``), never followed, and the mount point itself is never
    touched. The scan runs in a child process abandoned at ``timeout``: reading a
    process's maps waits for its mmap lock, which a process stuck on a dead server may
    hold. Raises ``SteeringError`` if the scan does not finish in time.
    """
    # Niced: a diagnosis must not slow the clients' remount on a busy host.
    argv = ["nice", "-n", "19", *_CHILD_ARGV, "--holders", mount_point, str(proc)]
    if mount_id is not None:
        argv.append(str(mount_id))
    try:
        ran = (machine or ThisHost()).run_bounded(argv, timeout)
    except OSError as exc:
        raise SteeringError(f"cannot scan {proc}: {exc.strerror or exc}") from None
    if ran.returncode is None:
        raise SteeringError(f"the scan of {proc} did not finish within {_seconds(timeout)}")
    if ran.returncode != 0:
        raise SteeringError(f"the scan of {proc} failed: {ran.stderr.strip()[-200:]}")
    holders = []
    for line in ran.stdout.splitlines():
        try:
            pid, command, uses = json.loads(line)
            holders.append(Holder(int(pid), str(command), tuple(map(str, uses))))
        except (ValueError, TypeError):
            continue  # a line cut short at MAX_OUTPUT_BYTES
    return tuple(holders)


def _holders_text(holders: Sequence[Holder], *, unmounted: bool) -> str:
    if not holders:
        return "no process was using it" if unmounted else "no process is using it"
    shown = ", ".join(f"{h.pid} ({h.command})" for h in holders[:10])
    more = f" and {len(holders) - 10} more" if len(holders) > 10 else ""
    if not unmounted:
        verb = "process is" if len(holders) == 1 else "processes are"
        return f"{len(holders)} {verb} using it: {shown}{more}"
    noun = "process keeps" if len(holders) == 1 else "processes keep"
    return f"{len(holders)} {noun} using the old mount: {shown}{more}"


def _left_alone(state: MountState) -> str | None:
    """Why ``heal`` leaves this mount alone, or None when it unmounts it."""
    if state.verdict not in HEALED:
        return f"{_LEFT_ALONE.get(state.verdict, 'no action')}: {state.reason}"
    if state.verdict is Verdict.HUNG and state.first_choice:
        # A new mount would try the same server first, and while it waits there automount
        # answers no lookup of the key: the failover's remount would wait behind it.
        return (f"no action: {state.reason}; {state.replica} is the map's first choice, so a "
                "new mount would wait on it too: the mount waits for it, or for the "
                "controller to steer elsewhere")  # fmt: skip
    return None


def _holders(
    point: str, mount_id: int | None, policy: HealPolicy, machine: Machine, *, unmounted: bool
) -> tuple[tuple[Holder, ...], str]:
    """Who uses the mount, and the words for it."""
    try:
        holders = find_holders(point, timeout=policy.scan_timeout, machine=machine,
                               mount_id=mount_id)  # fmt: skip
    except SteeringError as exc:
        return (), f"the processes using it are unknown ({exc})"
    return holders, _holders_text(holders, unmounted=unmounted)


def heal(
    state: MountState,
    *,
    policy: HealPolicy,
    mountinfo: Path = MOUNTINFO,
    machine: Machine | None = None,
) -> HealAction:
    """Lazily unmount a hung, stale or wrongly mounted key, so that autofs mounts an offered
    replica on the next access; report which processes still use the old mount.

    ``umount -l`` detaches at once without asking the server; processes already inside
    keep the old mount until they leave it. A mount of a replica no longer offered is
    forced as well (``-f``: requests in flight fail with EIO). A hung mount of the map's
    first choice is left alone: a new mount would hang on the same server. Every other
    verdict is left alone. Before it unmounts, the mount is looked up again by its id, so
    a mount that autofs replaced meanwhile is never touched. Raises ``SteeringError`` if
    mountinfo cannot be read.
    """

    def action(outcome: HealOutcome, reason: str, holders: tuple[Holder, ...] = ()) -> HealAction:
        return HealAction(
            state.volume, state.key, state.verdict, outcome, reason, state.mount_point, holders
        )

    machine = machine or ThisHost(mountinfo)
    point = state.mount_point
    left = _left_alone(state)
    if left is not None or point is None:
        return action(HealOutcome.NOTHING, left or f"no action: {state.reason}")
    if not any(
        m.mount_id == state.mount_id and m.mount_point == point
        for m in read_mounts(machine=machine)
    ):
        return action(HealOutcome.ALREADY_GONE, f"no action: {point} is no longer mounted")
    if policy.report_only:
        holders, using = _holders(point, state.mount_id, policy, machine, unmounted=False)
        text = f"report only: would lazily unmount {point}: {state.reason}; {using}"
        return action(HealOutcome.WOULD_UNMOUNT, text, holders)
    # The unmount first, the scan after (by mount id): a slow scan must not keep clients
    # on a dead or fenced replica.
    forced = state.verdict is Verdict.WRONG_REPLICA
    try:
        ran = machine.run_bounded([*(UMOUNT_FORCED if forced else UMOUNT), point],
                                  policy.umount_timeout)  # fmt: skip
    except OSError as exc:
        text = f"could not unmount {point}: cannot run umount: {exc.strerror or exc}"
        return action(HealOutcome.FAILED, f"{text}; {state.reason}")
    if ran.returncode != 0:
        why = (
            f"umount did not end within {_seconds(policy.umount_timeout)}"
            if ran.returncode is None
            else (ran.stderr.strip() or f"umount exited with status {ran.returncode}")
        )
        holders, _ = _holders(point, state.mount_id, policy, machine, unmounted=False)
        text = f"could not unmount {point}: {' '.join(why.split())}; {state.reason}"
        return action(HealOutcome.FAILED, text, holders)
    holders, using = _holders(point, state.mount_id, policy, machine, unmounted=True)
    how = "unmounted (forced, lazily)" if forced else "lazily unmounted"
    text = (
        f"{how} {point}: {state.reason}; autofs mounts an offered replica on the next access;"
        f" {using}"
    )
    return action(HealOutcome.UNMOUNTED, text, holders)


# -- this host -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThisHost:
    """The machine the agent runs on: its own files, automount, mounts and processes."""

    mountinfo: Path = MOUNTINFO
    name: str = "this host"

    def files_path(self, path: Path) -> Path:
        return path

    def reload_automount(self, pidfile: Path, *, systemd: bool) -> str:
        return reload_automount(pidfile, systemd=systemd)

    def read_mountinfo(self) -> bytes:
        return _read_mountinfo(self.mountinfo)

    def check(self, path: str, timeout: float, mount: tuple[str, int]) -> Ran:
        return _run_bounded([*_CHILD_ARGV, path], timeout, mount)

    def run_bounded(self, argv: Sequence[str], timeout: float) -> Ran:
        return _run_bounded(argv, timeout, None)
