"""The active check of a mount, against real FUSE mounts (one that never answers, one
that does): a hung check is abandoned at its deadline, and while it is stuck no other
check of that mount starts. See mount_helpers for what these tests need and clean up."""

from __future__ import annotations

import time
from pathlib import Path

from nfs_failover.steering.checks import CheckStatus, check_mount
from nfs_failover.steering.children import CHILD, RUNNER
from tests.steering.mount_helpers import (
    children_running,
    fuse_mount,
    process_state,
    reap_all,
    wait_until,
)


def test_a_path_that_is_not_a_mount_point_is_not_checked(tmp_path: Path) -> None:
    result = check_mount(tmp_path, timeout=1.0)

    assert result.status is CheckStatus.NOT_MOUNTED
    assert result.pid is None
    assert "not checked" in result.detail


def test_a_hung_mount_is_hung_by_its_deadline_and_its_check_is_abandoned(tmp_path: Path) -> None:
    try:
        assert reap_all() == 0
        with fuse_mount(tmp_path, "hung") as point:
            started = time.monotonic()
            first = check_mount(point, timeout=1.0)
            took = time.monotonic() - started

            assert first.status is CheckStatus.HUNG
            assert first.detail == "statvfs did not return within 1s"
            assert 1.0 <= took < 1.5
            assert RUNNER.abandoned_count() == 1
            # SIGKILL does not end it: the FUSE request is already with the daemon.
            assert wait_until(lambda: process_state(first.pid or 0) == "D", 2.0)

            started = time.monotonic()
            second = check_mount(point, timeout=1.0)

            assert time.monotonic() - started < 0.2
            assert second.status is CheckStatus.HUNG
            assert second.pid == first.pid
            assert "has been stuck for" in second.detail
            assert children_running(CHILD) == [first.pid]
            assert RUNNER.abandoned_count() == 1
            assert RUNNER.reap() == []
    finally:
        left = reap_all()
    assert left == 0


def test_a_healthy_mount_is_ok_with_its_latency(tmp_path: Path) -> None:
    with fuse_mount(tmp_path, "healthy") as point:
        result = check_mount(point, timeout=5.0)

    assert result.status is CheckStatus.OK
    assert result.latency is not None and 0 <= result.latency < 5.0
    assert result.detail.startswith("statvfs answered in ")
    assert RUNNER.abandoned_count() == 0
