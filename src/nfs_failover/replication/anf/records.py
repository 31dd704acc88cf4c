"""ANF's records read into the project's types: a volume's replication status, its side
of the replication, its SnapMirror snapshots, the entries of ``listReplications``, and
its export policy rules (what a storage fence changes and saves).

The SDK's models give enum members for the words they know and plain strings for the
rest; both are read as ANF's own word. What cannot be read is None, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from azure.mgmt.netapp import models as anf

from nfs_failover.replication.base import (
    MirrorState,
    ReplicationStatus,
    normalise_mirror_state,
    normalise_relationship_status,
)

_SNAPMIRROR_PREFIX = "snapmirror."


@dataclass(frozen=True)
class AnfReplicationInfo:
    """One entry of ANF's ``listReplications`` for a volume, in ANF's own words."""

    replication_id: str | None
    endpoint_type: str | None  # "src" or "dst": the side the listed volume is on
    remote_volume: str | None
    remote_region: str | None
    schedule: str | None
    mirror_state: MirrorState
    created: datetime | None


def replication_status(
    raw: anf.ReplicationStatus, *, source: str, destination: str, destination_volume: str
) -> ReplicationStatus:
    """ANF's ``replicationStatus`` of the destination volume, between the replicas named
    ``source`` and ``destination``; ANF's words are kept in ``raw``."""
    mirror = _text(raw.mirror_state)
    relationship = _text(raw.relationship_status)
    words = {
        "mirrorState": mirror,
        "relationshipStatus": relationship,
        "healthy": None if raw.healthy is None else str(raw.healthy).lower(),
        "totalProgress": raw.total_progress,
        "errorMessage": raw.error_message,
        "destinationVolume": destination_volume,
    }
    return ReplicationStatus(
        mirror_state=normalise_mirror_state(mirror),
        relationship_status=normalise_relationship_status(relationship),
        healthy=raw.healthy is True,
        source=source,
        destination=destination,
        error=raw.error_message or None,
        last_transfer_bytes=_bytes(raw.total_progress),
        raw={key: value for key, value in words.items() if value is not None},
    )


def endpoint_type(volume: anf.Volume) -> str | None:
    """The side of its replication a volume is on (``src`` or ``dst``), or None when it
    has no replication."""
    protection = volume.properties.data_protection if volume.properties else None
    replication = protection.replication if protection else None
    kind = _text(replication.endpoint_type) if replication else None
    return kind.lower() if kind else None


def replication_info(entry: anf.Replication) -> AnfReplicationInfo:
    return AnfReplicationInfo(
        replication_id=entry.replication_id,
        endpoint_type=_text(entry.endpoint_type),
        remote_volume=entry.remote_volume_resource_id,
        remote_region=entry.remote_volume_region,
        schedule=_text(entry.replication_schedule),
        mirror_state=normalise_mirror_state(_text(entry.mirror_state)),
        created=entry.replication_creation_time,
    )


def newest_snapmirror(snapshots: list[anf.Snapshot]) -> datetime | None:
    """Creation time of the newest ``snapmirror.*`` snapshot (ARM names nested resources
    ``account/pool/volume/snapshot``; the last part is the snapshot's own name)."""
    times = [
        snapshot.properties.created
        for snapshot in snapshots
        if snapshot.name
        and snapshot.name.rsplit("/", 1)[-1].startswith(_SNAPMIRROR_PREFIX)
        and snapshot.properties is not None
        and snapshot.properties.created is not None
    ]
    return max(times, default=None)


# The access flags of an export policy rule, each read-write flag with its read-only one.
_ACCESS_FLAGS = (
    ("unixReadWrite", "unixReadOnly"),
    ("kerberos5ReadWrite", "kerberos5ReadOnly"),
    ("kerberos5iReadWrite", "kerberos5iReadOnly"),
    ("kerberos5pReadWrite", "kerberos5pReadOnly"),
)


def export_rules(volume: anf.Volume) -> list[dict[str, object]]:
    """The volume's export policy rules as ANF sends them (REST names: ``ruleIndex``,
    ``allowedClients``, ``unixReadOnly``, ...), JSON-able; [] when it has none."""
    policy = volume.properties.export_policy if volume.properties else None
    return [dict(rule.as_dict()) for rule in (policy.rules if policy and policy.rules else [])]


def read_only_rule(rule: dict[str, object]) -> dict[str, object]:
    """The same rule granting no writes: every read-write flag off; where one was on, its
    read-only flag on instead (so the clients it named may still read). ``unixReadOnly``
    is always set, ``unixReadWrite`` always cleared."""
    fenced = dict(rule)
    for write, read in _ACCESS_FLAGS:
        if fenced.get(write) or write == "unixReadWrite":
            fenced[write] = False
            fenced[read] = True
    return fenced


def refuses_writes(rules: list[dict[str, object]]) -> bool:
    """Whether no rule grants writes (an empty list grants nothing)."""
    return all(not rule.get(write) for rule in rules for write, _ in _ACCESS_FLAGS)


def _bytes(total_progress: str | None) -> int | None:
    """ANF's ``totalProgress`` is a count of bytes as a string; anything else is None."""
    try:
        value = int((total_progress or "").strip())
    except ValueError:
        return None
    return value if value >= 0 else None


def _text(value: str | Enum | None) -> str | None:
    """An SDK enum field as ANF's word (the SDK gives enum members for known values)."""
    if isinstance(value, Enum):
        return str(value.value)
    return value
