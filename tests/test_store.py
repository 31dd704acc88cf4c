"""The sqlite store: whole states, compare-and-swap, reports, and a private file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from nfs_failover.config import StoreUrl
from nfs_failover.desired import VolumeDesired
from nfs_failover.store import Event, Report, SqliteStore, StoreError, open_store

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


def test_the_journal_is_append_only_and_read_in_order(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    first = store.append(
        Event("crr", "failover", {"reason": "source down"}, step="break", phase="before")
    )
    second = store.append(
        Event("crr", "failover", {"result": "broken"}, step="break", phase="after")
    )
    store.append(Event("other", "probe", {}))
    assert first < second
    crr = store.events("crr")
    assert [(e.step, e.phase, e.detail) for e in crr] == [
        ("break", "before", {"reason": "source down"}),
        ("break", "after", {"result": "broken"}),
    ]
    assert [e.id for e in store.events(after=first)] == [second, second + 1]


def test_a_volume_runs_one_workflow_at_a_time_and_resumes_from_its_step(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    running = store.start_workflow("crr", "failover", {"from": "site1"})
    with pytest.raises(StoreError, match="UNIQUE"):
        store.start_workflow("crr", "failback", {})
    store.advance_workflow(running.id, 3, {"from": "site1", "broken": True})
    # A controller restarted here finds the workflow and the step to run next.
    resumed = SqliteStore(tmp_path / "state.db").running_workflow("crr")
    assert resumed is not None
    assert (resumed.id, resumed.step) == (running.id, 3)
    assert resumed.data == {"from": "site1", "broken": True}
    store.finish_workflow(running.id, "done")
    assert store.running_workflow("crr") is None
    last = store.last_workflow("crr")
    assert last is not None and last.status == "done"
    assert store.start_workflow("crr", "failback", {}).id > running.id


def test_only_one_controller_holds_the_lease_until_it_expires(tmp_path: Path) -> None:
    one = SqliteStore(tmp_path / "state.db")
    two = SqliteStore(tmp_path / "state.db")  # another controller on the same store
    assert one.acquire_lease("leader", "ctl-a", ttl=10, now=100.0)
    assert not two.acquire_lease("leader", "ctl-b", ttl=10, now=105.0)
    assert one.acquire_lease("leader", "ctl-a", ttl=10, now=108.0)  # renewed to 118
    assert not two.acquire_lease("leader", "ctl-b", ttl=10, now=117.0)
    assert two.acquire_lease("leader", "ctl-b", ttl=10, now=118.5)  # expired: taken over
    assert one.lease_holder("leader", now=119.0) == "ctl-b"
    assert not one.acquire_lease("leader", "ctl-a", ttl=10, now=119.0)
    two.release_lease("leader", "ctl-b")
    assert one.lease_holder("leader", now=119.0) is None


def test_the_newest_events_and_the_last_of_a_kind_are_found_past_any_limit(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "state.db")
    store.append(Event("*", "pause", {"by": "operator"}))
    for i in range(300):
        store.append(Event("crr", "decision", {"reason": f"cycle {i}"}))
    store.append(
        Event("crr", "failover", {"refused": "no failover: lag 31m"}, step="check", phase="after")
    )
    store.append(Event("crr", "resume", {}))
    tail = store.recent_events("crr", limit=3)
    assert [e.kind for e in tail] == ["decision", "failover", "resume"]
    last = store.last_event(["*", "crr"], ["pause", "resume"])
    assert last is not None and last.kind == "resume"
    refused = store.last_event(["crr"], ["failover"], with_key="refused")
    assert refused is not None and refused.detail["refused"] == "no failover: lag 31m"
    assert store.last_event(["crr"], ["decision"], with_key="refused") is None
    assert store.count_events("crr", "check", "after") == 1


def test_an_existing_store_wider_than_0600_is_narrowed_at_open(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    SqliteStore(path).close()
    path.chmod(0o644)
    store = SqliteStore(path)
    try:
        assert path.stat().st_mode & 0o777 == 0o600
        for side in ("state.db-wal", "state.db-shm"):
            if (tmp_path / side).exists():
                assert (tmp_path / side).stat().st_mode & 0o777 == 0o600
    finally:
        store.close()
