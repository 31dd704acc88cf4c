"""The client workload on the real lab: acknowledged writes, and what an outage does."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import pytest

from nfs_failover.config import Export
from nfs_failover.lab import Lab
from nfs_failover.lab.workload import Ack, Workload

pytestmark = pytest.mark.lab


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.name.startswith("w")}


def test_every_acknowledged_write_is_on_the_server_with_its_content(lab: Lab) -> None:
    zone = lab.zone("az1")
    export = Export.parse(zone.export)

    async def scenario() -> Workload:
        workload = Workload(resolve=lambda: _const(export), timeout=2.0)
        stop = asyncio.Event()
        running = asyncio.create_task(workload.run(stop))
        await asyncio.sleep(1.0)
        stop.set()
        await running
        return workload

    workload = asyncio.run(scenario())
    assert len(workload.acks) >= 5 and workload.failures == []
    assert workload.reads == len(workload.acks)
    check = workload.verify(files(zone.folder))
    assert check.passed and check.present == len(workload.acks)


def test_during_an_outage_writes_fail_within_the_deadline_and_nothing_is_acknowledged(
    lab: Lab,
) -> None:
    export = Export.parse(lab.zone("az1").export)
    workload = Workload(resolve=lambda: _const(export), timeout=1.0)
    lab.outage("az1")
    try:
        started = time.monotonic()
        result = asyncio.run(workload.step())
        elapsed = time.monotonic() - started
    finally:
        lab.restore("az1")
    assert result is None and workload.acks == []
    assert len(workload.failures) == 1 and elapsed < 1.5
    assert asyncio.run(workload.step()) is not None  # back after the restore


def test_verification_counts_preserved_writes_and_finds_lost_ones() -> None:
    workload = Workload(resolve=lambda: _const(Export.parse("198.18.1.5:/crr-site1")))
    contents = {"a": b"on the final source", "b": b"preserved", "c": b"lost"}
    for name, data in contents.items():
        workload.acks.append(Ack(name, hashlib.sha256(data).hexdigest(), "x", 0.0))
    check = workload.verify({"a": contents["a"], "c": b"other content"}, {"b": contents["b"]})
    assert (check.present, check.preserved, check.lost) == (1, ("b",), ("c",))
    assert not check.passed


async def _const(export: Export) -> Export:
    return export
