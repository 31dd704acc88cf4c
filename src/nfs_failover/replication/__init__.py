"""Replication providers: one interface (``base``), one module or package per engine."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nfs_failover.replication.base import (
    BeforeFence,
    Divergence,
    FenceResult,
    MirrorState,
    OperationResult,
    Progress,
    Provider,
    RelationshipStatus,
    ReplicationStatus,
    Saved,
    normalise_mirror_state,
    normalise_relationship_status,
)

if TYPE_CHECKING:
    from nfs_failover.config import Volume


def open_provider(volume: Volume) -> Provider:
    """The provider of a volume's replication. Cloud SDKs are imported only when used."""
    provider = volume.replication.provider
    if provider == "local":
        from nfs_failover.replication.local import LocalProvider  # noqa: PLC0415

        return LocalProvider(volume)
    if provider == "anf":
        from nfs_failover.replication.anf import AnfProvider  # noqa: PLC0415

        return AnfProvider(volume)
    from nfs_failover.replication.ontap import OntapProvider  # noqa: PLC0415

    return OntapProvider(volume)


__all__ = [
    "BeforeFence",
    "Divergence",
    "FenceResult",
    "MirrorState",
    "OperationResult",
    "Progress",
    "Provider",
    "RelationshipStatus",
    "ReplicationStatus",
    "Saved",
    "normalise_mirror_state",
    "normalise_relationship_status",
    "open_provider",
]
