"""The desired state: what each volume's clients should be offered now.

The controller decides it, the store keeps it, the agents apply it. Per volume: the
replicas clients may use, in order of preference, the one that takes writes, and the
fenced ones that no client may reach until failback ends.
"""

from __future__ import annotations

from dataclasses import dataclass

from nfs_failover.config import Mode, Volume


@dataclass(frozen=True)
class VolumeDesired:
    volume: str
    offered: tuple[str, ...]  # replica names, most preferred first
    active: str  # the replica that takes writes (read-write) or is preferred (read-only)
    fenced: tuple[str, ...] = ()
    generation: int = 0

    def __post_init__(self) -> None:
        if set(self.offered) & set(self.fenced):
            raise ValueError(f"volume {self.volume}: a fenced replica cannot be offered")
        if self.offered and self.active not in self.offered:
            raise ValueError(f"volume {self.volume}: the active replica must be offered")


def normal(volume: Volume, read_only_fallback: bool) -> VolumeDesired:
    """The state before any failover: the source first.

    A read-only volume offers the destination after the source (the seed's failover); a
    read-write volume only where its policy allows falling back to the read-only copy.
    """
    source, destination = (replica.name for replica in volume.replicas)
    fallback = volume.mode is Mode.READ_ONLY or read_only_fallback
    offered = (source, destination) if fallback else (source,)
    return VolumeDesired(volume=volume.name, offered=offered, active=source)


def failed_over(volume: Volume, generation: int) -> VolumeDesired:
    """After a read-write failover: the destination alone, the old source fenced."""
    source, destination = (replica.name for replica in volume.replicas)
    return VolumeDesired(
        volume=volume.name,
        offered=(destination,),
        active=destination,
        fenced=(source,),
        generation=generation,
    )
