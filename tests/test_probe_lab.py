"""A monitor's prober keeps its connections, and never mistakes a closed one for an outage."""

from __future__ import annotations

import asyncio
import subprocess
import time

import pytest

from nfs_failover.lab import Lab
from nfs_failover.probe import Prober, ProbeResult, Reason, Stage

pytestmark = pytest.mark.lab


def _reused(result: ProbeResult) -> list[str]:
    return [s.stage.value for s in result.stages if s.detail == "reused"]


def _reset_server_connections(lab: Lab, zone: str) -> None:
    """Abort the zone's established NFS connections from the server side (sends RSTs)."""
    namespace = lab.zone(zone).namespace
    subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            namespace,
            "ss",
            "-K",
            "-t",
            "state",
            "established",
            "( sport = :111 or sport = :635 or sport = :2049 )",
        ],
        check=True,
        capture_output=True,
        timeout=10,
    )


def test_second_probe_reuses_the_connections_of_the_first(lab: Lab) -> None:
    async def twice() -> tuple[ProbeResult, ProbeResult]:
        async with Prober(timeout=2.0) as prober:
            export = lab.zone("az1").export
            return await prober.probe(export), await prober.probe(export)

    first, second = asyncio.run(twice())
    assert first.up and second.up
    assert _reused(first) == []
    assert _reused(second) == ["portmap", "mountd", "nfs"]


def test_connections_closed_by_the_server_are_reopened_not_reported_down(lab: Lab) -> None:
    async def around_reset() -> ProbeResult:
        async with Prober(timeout=2.0) as prober:
            export = lab.zone("az1").export
            assert (await prober.probe(export)).up
            _reset_server_connections(lab, "az1")
            return await prober.probe(export)

    after = asyncio.run(around_reset())
    assert after.up, after.summary()
    assert _reused(after) == []


def test_kept_connections_report_an_outage_within_the_deadline_and_recover(lab: Lab) -> None:
    async def through_outage() -> tuple[ProbeResult, float, ProbeResult]:
        async with Prober(timeout=1.0) as prober:
            export = lab.zone("az1").export
            assert (await prober.probe(export)).up
            lab.outage("az1")
            try:
                started = time.monotonic()
                down = await prober.probe(export)
                elapsed = time.monotonic() - started
            finally:
                lab.restore("az1")
            return down, elapsed, await prober.probe(export)

    down, elapsed, back = asyncio.run(through_outage())
    assert not down.up
    assert down.failed is not None
    assert (down.failed.stage, down.failed.reason) == (Stage.GETPORT, Reason.TIMEOUT)
    assert elapsed < 1.0 + 0.5
    assert back.up, back.summary()
    assert _reused(back) == []  # the failure dropped the old connections
