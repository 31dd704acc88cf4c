"""What a drill is asked to do: its options, with the defaults of ``nfs-failover drill``."""

from __future__ import annotations

from dataclasses import dataclass

from nfs_failover.config import Mode
from nfs_failover.errors import NfsFailoverError

SEED_OPTIONS = "rw,nosuid,hard,tcp,timeo=60"  # the seed article's auto.misc options
NFS_VERSIONS = ("3", "4.1")


class DrillError(NfsFailoverError):
    """The drill could not run to its end (not the same as a failed verification)."""


@dataclass(frozen=True)
class DrillOptions:
    mode: Mode = Mode.READ_WRITE
    grace: float = 5.0  # failover_after, seconds
    schedule: float = 10.0  # replication interval, seconds
    flaps: int = 0
    flap_length: float | None = None  # default: 40 % of the grace period
    steady: float = 3.0  # seconds of workload on each side before moving on
    probe_interval: float = 0.5
    probe_timeout: float = 0.5
    phase_timeout: float = 120.0  # the longest any one phase may take
    keep: bool = False  # leave a lab the drill brought up running
    clients: int = 2  # client hosts
    nfs_version: str = "3"
    mount_options: str = SEED_OPTIONS  # without vers= (nfs_version adds it)
    hang_after: float = 3.0  # seconds an operation may take before its process is hung
    compare: str | None = None  # "seed": run the seed article's own setup first
    operator_delay: float = 60.0  # the seed run's manual break, seconds after the outage

    @property
    def restore_after(self) -> float | None:
        """With --compare, both runs restore zone 1 this long after the outage."""
        return self.operator_delay + self.steady + 10.0 if self.compare else None

    @property
    def flap_seconds(self) -> float:
        return self.flap_length if self.flap_length is not None else 0.4 * self.grace

    @property
    def options(self) -> str:
        """The mount options the map offers: the seed's, the NFS version, and for NFSv3
        ``nolock`` (the lab's Ganesha runs no lock manager; each client's database is its
        own, so local locks are enough)."""
        parts = [p for p in self.mount_options.split(",") if p and not p.startswith("vers=")]
        if self.mode is Mode.READ_ONLY:
            parts = ["ro" if p == "rw" else p for p in parts]
        parts.append(f"vers={self.nfs_version}")
        if self.nfs_version == "3" and "lock" not in parts and "nolock" not in parts:
            parts.append("nolock")
        return ",".join(parts)

    @property
    def op(self) -> str:
        """The operation that shows a client's volume works: a write, or (read-only) a read."""
        return "write" if self.mode is Mode.READ_WRITE else "read"
