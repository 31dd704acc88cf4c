"""Divergence found over NFS, for providers whose service cannot list changed files.

Both replicas are walked with the project's own NFS client; a file counts as changed on
a side when its ctime is at or after the last common point (the last transferred
snapshot), less a margin for the clocks of the servers and the provider. Paths on one
side only are attributed by the same rule: new on that side, or deleted on the other.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from nfs_failover.config import Export
from nfs_failover.errors import ProviderError, ProviderTimeout, RpcError
from nfs_failover.nfs_tree import walk_export
from nfs_failover.replication.base import Divergence
from nfs_failover.rpc.nfs3 import Fattr3

CLOCK_MARGIN = timedelta(seconds=2)


async def divergence_over_nfs(
    source: Export,
    destination: Export,
    since: datetime,
    *,
    timeout: float,
    margin: timedelta = CLOCK_MARGIN,
) -> Divergence:
    try:
        source_tree, destination_tree = await asyncio.gather(
            walk_export(source, timeout=timeout), walk_export(destination, timeout=timeout)
        )
    except TimeoutError as exc:
        raise ProviderTimeout(f"walking {source} and {destination} took over {timeout:g}s") from exc
    except RpcError as exc:
        raise ProviderError(f"divergence over NFS: {exc}") from exc
    cutoff = (since - margin).timestamp()
    source_only, destination_only = _attribute(source_tree, destination_tree, cutoff)
    return Divergence(since=since, source_only=source_only, destination_only=destination_only)


def _attribute(
    source: dict[str, Fattr3], destination: dict[str, Fattr3], cutoff: float
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    on_source: set[str] = set()
    on_destination: set[str] = set()
    for path in source.keys() | destination.keys():
        here, there = source.get(path), destination.get(path)
        source_new = here is not None and here.ctime.as_float() >= cutoff
        destination_new = there is not None and there.ctime.as_float() >= cutoff
        if source_new or (there is not None and here is None and not destination_new):
            on_source.add(path)  # changed, created, or deleted on the source
        if destination_new or (here is not None and there is None and not source_new):
            on_destination.add(path)
    return tuple(sorted(on_source)), tuple(sorted(on_destination))
