"""Azure NetApp Files replication: the provider (``provider``), ANF's records read into
the project's types (``records``), and the SDK's calls under a deadline (``calls``)."""

from __future__ import annotations

from nfs_failover.replication.anf.provider import AnfProvider
from nfs_failover.replication.anf.records import AnfReplicationInfo

__all__ = ["AnfProvider", "AnfReplicationInfo"]
