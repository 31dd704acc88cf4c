"""Healing a key whose mount is hung, stale or from a replica no longer offered: a lazy
unmount, after which autofs mounts an offered replica on the next access; and the scan for
the processes that still use the old mount.

Owns which verdicts are healed and which are left alone (with why), the ``umount``
command, and the holders scan (a child of ``mount_check_child``, bounded like the checks).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from nfs_failover.errors import SteeringError
from nfs_failover.steering.children import CHILD_ARGV, seconds_text
from nfs_failover.steering.machine import Machine
from nfs_failover.steering.mountinfo import MOUNTINFO, read_mounts
from nfs_failover.steering.this_host import ThisHost
from nfs_failover.steering.verdicts import MountState, Verdict

__all__ = [
    "HEALED",
    "PROC",
    "UMOUNT",
    "UMOUNT_FORCED",
    "HealAction",
    "HealOutcome",
    "HealPolicy",
    "Holder",
    "find_holders",
    "heal",
]

PROC = Path("/proc")
# --no-canonicalize: canonicalizing stats the path, which hangs on a dead server;
# --internal-only: no umount.nfs helper, which may try to reach the server.
UMOUNT = ("umount", "--lazy", "--no-canonicalize", "--internal-only")
# A mount of a replica no longer offered (fenced, or the clients moved on) is also forced:
# the kernel aborts the requests in flight on it, so processes stuck on a dead or fenced
# server get EIO at once and can retry through the automount, instead of waiting forever.
# Nothing they wait for was acknowledged: a write is owed only once fsync returned.
UMOUNT_FORCED = (*UMOUNT[:2], "--force", *UMOUNT[2:])


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
    argv = ["nice", "-n", "19", *CHILD_ARGV, "--holders", mount_point, str(proc)]
    if mount_id is not None:
        argv.append(str(mount_id))
    try:
        ran = (machine or ThisHost()).run_bounded(argv, timeout)
    except OSError as exc:
        raise SteeringError(f"cannot scan {proc}: {exc.strerror or exc}") from None
    if ran.returncode is None:
        raise SteeringError(f"the scan of {proc} did not finish within {seconds_text(timeout)}")
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
        return (
            f"no action: {state.reason}; {state.replica} is the map's first choice, so a "
            "new mount would wait on it too: the mount waits for it, or for the "
            "controller to steer elsewhere"
        )
    return None


def _holders(
    point: str, mount_id: int | None, policy: HealPolicy, machine: Machine, *, unmounted: bool
) -> tuple[tuple[Holder, ...], str]:
    """Who uses the mount, and the words for it."""
    try:
        holders = find_holders(
            point, timeout=policy.scan_timeout, machine=machine, mount_id=mount_id
        )
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
        umount = UMOUNT_FORCED if forced else UMOUNT
        ran = machine.run_bounded([*umount, point], policy.umount_timeout)
    except OSError as exc:
        text = f"could not unmount {point}: cannot run umount: {exc.strerror or exc}"
        return action(HealOutcome.FAILED, f"{text}; {state.reason}")
    if ran.returncode != 0:
        why = (
            f"umount did not end within {seconds_text(policy.umount_timeout)}"
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
