"""The sqlite store: whole states, compare-and-swap, reports, and a private file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from nfs_failover.config import StoreUrl
from nfs_failover.desired import VolumeDesired
from nfs_failover.store import Report, SqliteStore, StoreError, open_store

NORMAL = VolumeDesired("crr", offered=("site1",), active="site1", generation=0)
FAILED_OVER = VolumeDesired("crr", ("dest1",), "dest1", fenced=("site1",), generation=1)


def test_desired_state_round_trips_whole(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    assert store.get_desired("crr") is None
    assert store.set_desired(NORMAL, expected_generation=None)
    assert store.set_desired(FAILED_OVER, expected_generation=0)
    reopened = SqliteStore(tmp_path / "state.db")
    assert reopened.get_desired("crr") == FAILED_OVER
    assert reopened.all_desired() == {"crr": FAILED_OVER}


def test_a_writer_with_a_stale_generation_changes_nothing(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    store.set_desired(NORMAL, expected_generation=None)
    assert not store.set_desired(NORMAL, expected_generation=None)  # already there
    assert store.set_desired(FAILED_OVER, expected_generation=0)
    late = VolumeDesired("crr", ("site1", "dest1"), "site1", generation=1)
    assert not store.set_desired(late, expected_generation=0)
    assert store.get_desired("crr") == FAILED_OVER


def test_reports_keep_the_latest_per_agent_and_replica(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    store.put_report(Report("client1", "crr", "site1", True, "up in 1.0 ms", 0.001, 10.0))
    store.put_report(Report("client1", "crr", "site1", False, "down at portmap", 2.0, 11.0))
    store.put_report(Report("client2", "crr", "site1", True, "up", 0.002, 11.0))
    latest = {r.agent: r for r in store.reports("crr")}
    assert (latest["client1"].up, latest["client1"].at) == (False, 11.0)
    assert latest["client2"].up
    assert store.reports("other") == []


def test_the_store_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    SqliteStore(tmp_path / "state.db")
    assert stat.S_IMODE((tmp_path / "state.db").stat().st_mode) == 0o600


def test_an_unusable_store_is_a_store_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("")
    with pytest.raises(StoreError, match=r"not-a-dir/state\.db: cannot open the store"):
        SqliteStore(tmp_path / "not-a-dir" / "state.db")
    with pytest.raises(StoreError, match="etcd store is not available yet"):
        open_store(StoreUrl.parse("etcd://127.0.0.1:2379"))
