"""Replication providers: one interface (``base``), one module per engine."""

from nfs_failover.replication.base import (
    Divergence,
    MirrorState,
    OperationResult,
    Progress,
    Provider,
    RelationshipStatus,
    ReplicationStatus,
    normalise_mirror_state,
    normalise_relationship_status,
)

__all__ = [
    "Divergence",
    "MirrorState",
    "OperationResult",
    "Progress",
    "Provider",
    "RelationshipStatus",
    "ReplicationStatus",
    "normalise_mirror_state",
    "normalise_relationship_status",
]
