"""The verdict on each key of our volumes on this client: what is mounted there, from
which replica, and whether that is what the desired state offers.

Owns mapping each NFS mount under the autofs mount root to its volume and replica, and
the verdict with the sentence that explains it. Only mounts of an offered replica are
checked; a key that is not mounted is never touched.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath

from nfs_failover.config import Config, Replica, Volume
from nfs_failover.desired import VolumeDesired
from nfs_failover.steering.checks import CheckResult, CheckStatus, check_mount
from nfs_failover.steering.machine import Machine
from nfs_failover.steering.mountinfo import MOUNTINFO, MountInfo, nfs_mounts, read_mounts
from nfs_failover.steering.this_host import ThisHost

__all__ = [
    "ManagedMount",
    "MountState",
    "Verdict",
    "classify",
    "managed_mounts",
    "mount_root",
    "survey",
]


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
        text = (
            f"mounted from {replica.name}, a fallback, while the preferred {desired.active} "
            "answers again"
        )
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
