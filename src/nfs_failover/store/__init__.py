"""The store: the desired state, the vantage points' reports, the journal of workflow
steps and the leader lease, shared by the controller and the agents.

``contract`` says what every store guarantees (``Store``, written as a contract), and
``sqlite`` and ``etcd`` keep it; ``open_store`` opens the one the config names. Callers
name ``Store`` only, never an implementation.
"""

from __future__ import annotations

from nfs_failover.config import EtcdSettings, StoreUrl
from nfs_failover.store.contract import (
    REPORT_TTL,
    Event,
    Report,
    Store,
    StoreError,
    UnreadableRecord,
    Workflow,
    watch_desired_async,
)
from nfs_failover.store.etcd import EtcdStore
from nfs_failover.store.sqlite import SqliteStore

__all__ = [
    "REPORT_TTL",
    "EtcdStore",
    "Event",
    "Report",
    "SqliteStore",
    "Store",
    "StoreError",
    "UnreadableRecord",
    "Workflow",
    "open_store",
    "watch_desired_async",
]


def open_store(url: StoreUrl, *, etcd: EtcdSettings | None = None, timeout: float = 5.0) -> Store:
    """The store ``url`` names; ``etcd`` gives the etcd store its prefix and TLS (the
    config's ``etcd`` section; its defaults when None). Each call of the store returns or
    raises within ``timeout`` seconds."""
    if url.scheme == "sqlite" and url.sqlite_path is not None:
        return SqliteStore(url.sqlite_path, timeout=timeout)
    if url.scheme == "etcd" and url.etcd_endpoints:
        return EtcdStore(url.etcd_endpoints, settings=etcd or EtcdSettings(), timeout=timeout)
    raise StoreError(f"{url}: not a store this version can open")
