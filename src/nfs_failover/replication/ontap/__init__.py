"""NetApp ONTAP SnapMirror: the provider (``provider``), ONTAP's records read into the
project's types (``records``), and the REST client under a deadline (``client``)."""

from __future__ import annotations

from nfs_failover.replication.ontap.provider import OntapProvider
from nfs_failover.replication.ontap.records import OntapRecord, parse_lag_time

__all__ = ["OntapProvider", "OntapRecord", "parse_lag_time"]
