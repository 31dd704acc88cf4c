"""The store contract, the same tests for every store: sqlite, etcd, and etcd over TLS with
client certificates."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Iterator

import pytest

from nfs_failover.desired import VolumeDesired
from nfs_failover.pacing import Deadline
from nfs_failover.store import (
    REPORT_TTL,
    Event,
    Report,
    Store,
    StoreError,
    watch_desired_async,
)
from tests.store.conftest import Backend

NORMAL = VolumeDesired("crr", offered=("site1",), active="site1", generation=0)
FAILED_OVER = VolumeDesired("crr", ("dest1",), "dest1", fenced=("site1",), generation=1)
WAIT = 30.0  # the most any test waits for what it expects; never reached when all is well


def until(condition: object, what: str) -> None:
    """Wait (bounded) until ``condition()`` is true: for what only the passing of time
    brings, such as a lease's expiry."""
    deadline = Deadline(WAIT)
    while not condition():  # type: ignore[operator]
        assert not deadline.passed(), f"not within {WAIT:g}s: {what}"
        threading.Event().wait(0.05)


# -- the desired state -------------------------------------------------------------------


def test_desired_state_round_trips_whole(backend: Backend, store: Store) -> None:
    assert store.get_desired("crr") is None
    assert store.set_desired(NORMAL, expected_generation=None)
    assert store.set_desired(FAILED_OVER, expected_generation=0)
    reopened = backend.open()
    assert reopened.get_desired("crr") == FAILED_OVER
    assert reopened.all_desired() == {"crr": FAILED_OVER}


def test_a_writer_with_a_stale_generation_changes_nothing(store: Store) -> None:
    store.set_desired(NORMAL, expected_generation=None)
    assert not store.set_desired(NORMAL, expected_generation=None)  # already there
    assert store.set_desired(FAILED_OVER, expected_generation=0)
    late = VolumeDesired("crr", ("site1", "dest1"), "site1", generation=1)
    assert not store.set_desired(late, expected_generation=0)
    assert store.get_desired("crr") == FAILED_OVER


def test_of_two_writers_that_read_the_same_generation_only_the_first_wins(
    backend: Backend, store: Store
) -> None:
    other = backend.open()
    store.set_desired(NORMAL, expected_generation=None)
    seen_by_both = other.get_desired("crr")
    assert seen_by_both is not None and seen_by_both.generation == 0
    assert store.set_desired(FAILED_OVER, expected_generation=0)
    back = VolumeDesired("crr", ("site1", "dest1"), "site1", generation=1)
    assert not other.set_desired(back, expected_generation=seen_by_both.generation)
    assert other.get_desired("crr") == FAILED_OVER


def test_set_desired_with_an_expected_generation_needs_a_record(store: Store) -> None:
    assert not store.set_desired(FAILED_OVER, expected_generation=0)
    assert store.get_desired("crr") is None


def test_an_unreadable_record_is_an_error_for_its_volume_only(
    backend: Backend, store: Store
) -> None:
    store.set_desired(VolumeDesired("other", ("a",), "a"), expected_generation=None)
    backend.corrupt("crr", "{not json")
    with pytest.raises(StoreError, match="desired state of volume crr: unreadable row"):
        store.get_desired("crr")
    assert set(store.all_desired()) == {"other"}


# -- the watch ---------------------------------------------------------------------------


def _watch(store: Store) -> tuple[queue.Queue[dict[str, VolumeDesired]], threading.Event]:
    seen: queue.Queue[dict[str, VolumeDesired]] = queue.Queue()
    stop = threading.Event()

    def follow() -> None:
        for snapshot in store.watch_desired(stop):
            seen.put(snapshot)

    threading.Thread(target=follow, daemon=True).start()
    return seen, stop


@pytest.fixture
def watched(backend: Backend) -> Iterator[tuple[queue.Queue[dict[str, VolumeDesired]], Store]]:
    watcher = backend.open()
    seen, stop = _watch(watcher)
    try:
        yield seen, backend.open()
    finally:
        stop.set()


def test_a_watch_gives_the_current_state_first_then_each_change_from_another_writer(
    backend: Backend, store: Store
) -> None:
    store.set_desired(NORMAL, expected_generation=None)
    seen, stop = _watch(backend.open())
    try:
        assert seen.get(timeout=WAIT) == {"crr": NORMAL}
        store.set_desired(FAILED_OVER, expected_generation=0)
        assert seen.get(timeout=WAIT) == {"crr": FAILED_OVER}
        other = VolumeDesired("lab", ("az1", "az2"), "az1")
        store.set_desired(other, expected_generation=None)
        assert seen.get(timeout=WAIT) == {"crr": FAILED_OVER, "lab": other}
    finally:
        stop.set()


def test_a_watch_of_an_empty_store_starts_with_no_state(
    watched: tuple[queue.Queue[dict[str, VolumeDesired]], Store],
) -> None:
    seen, writer = watched
    assert seen.get(timeout=WAIT) == {}
    writer.set_desired(NORMAL, expected_generation=None)
    assert seen.get(timeout=WAIT) == {"crr": NORMAL}


def test_a_watch_ignores_writes_that_leave_the_desired_state_as_it_was(
    watched: tuple[queue.Queue[dict[str, VolumeDesired]], Store],
) -> None:
    seen, writer = watched
    assert seen.get(timeout=WAIT) == {}
    writer.append(Event("crr", "decision", {"reason": "no action"}))
    writer.put_report(Report("client1", "crr", "site1", True, "up", 0.001, time.time()))
    writer.set_desired(NORMAL, expected_generation=None)
    assert seen.get(timeout=WAIT) == {"crr": NORMAL}  # the first snapshot after {} is this


def test_a_stopped_watch_ends(backend: Backend) -> None:
    store = backend.open()
    stop = threading.Event()
    ended = threading.Event()

    def follow() -> None:
        for _ in store.watch_desired(stop):
            stop.set()
        ended.set()

    threading.Thread(target=follow, daemon=True).start()
    assert ended.wait(WAIT)


def test_a_coroutine_learns_a_change_from_the_watch_while_its_loop_runs(
    backend: Backend, store: Store
) -> None:
    watcher = backend.open()

    async def main() -> tuple[list[dict[str, VolumeDesired]], int]:
        stop = asyncio.Event()
        ticks = 0

        async def tick() -> None:  # the loop keeps running while the watch waits
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(tick())
        seen = []
        async with asyncio.timeout(WAIT):
            async for snapshot in watch_desired_async(watcher, stop):
                seen.append(snapshot)
                if len(seen) == 1:
                    await asyncio.to_thread(store.set_desired, NORMAL, expected_generation=None)
                else:
                    stop.set()
        await ticker
        return seen, ticks

    seen, ticks = asyncio.run(main())
    assert seen == [{}, {"crr": NORMAL}]
    assert ticks > 0


# -- the vantage points' reports ---------------------------------------------------------


def test_reports_keep_the_latest_per_agent_and_replica(store: Store) -> None:
    now = time.time()
    store.put_report(Report("client1", "crr", "site1", True, "up in 1.0 ms", 0.001, now - 2))
    store.put_report(Report("client1", "crr", "site1", False, "down at portmap", 2.0, now - 1))
    store.put_report(Report("client2", "crr", "site1", True, "up", 0.002, now - 1))
    store.put_report(Report("client/3", "lab", "az1", True, "up", 0.002, now))
    latest = {r.agent: r for r in store.reports("crr")}
    assert (latest["client1"].up, latest["client1"].at) == (False, now - 1)
    assert latest["client2"].up
    assert set(latest) == {"client1", "client2"}
    assert store.reports("other") == []
    assert {r.agent for r in store.reports()} == {"client1", "client2", "client/3"}


def test_a_report_older_than_its_expiry_is_not_returned(store: Store) -> None:
    now = time.time()
    store.put_report(Report("gone", "crr", "site1", False, "down", 2.0, now - REPORT_TTL - 1))
    store.put_report(Report("here", "crr", "site1", True, "up", 0.001, now))
    assert [r.agent for r in store.reports("crr", now=now)] == ["here"]
    assert {r.agent for r in store.reports("crr", now=now - 60)} == {"gone", "here"}


# -- the journal -------------------------------------------------------------------------


def test_the_journal_is_append_only_and_read_in_order(store: Store) -> None:
    first = store.append(
        Event("crr", "failover", {"reason": "source down"}, step="break", phase="before")
    )
    second = store.append(
        Event("crr", "failover", {"result": "broken"}, step="break", phase="after")
    )
    third = store.append(Event("other", "probe", {}))
    assert first < second < third
    crr = store.events("crr")
    assert [(e.step, e.phase, e.detail) for e in crr] == [
        ("break", "before", {"reason": "source down"}),
        ("break", "after", {"result": "broken"}),
    ]
    assert [e.id for e in crr] == [first, second]
    assert [e.id for e in store.events(after=first)] == [second, third]
    assert [e.id for e in store.events(after=first, limit=1)] == [second]
    assert store.events(after=third) == []


def test_an_event_keeps_its_workflow_and_time_and_gets_one_when_it_has_none(
    store: Store,
) -> None:
    before = time.time()
    store.append(Event("crr", "failover", {"n": 1}, workflow=7, step="s", phase="after", at=5.0))
    store.append(Event("crr", "decision", {"at": object()}))  # detail written with str()
    timed, untimed = store.events("crr")
    assert (timed.workflow, timed.at, timed.detail) == (7, 5.0, {"n": 1})
    assert untimed.at >= before and untimed.workflow is None
    assert isinstance(untimed.detail["at"], str)


def test_the_newest_events_and_the_last_of_a_kind_are_found_past_any_limit(
    store: Store,
) -> None:
    store.append(Event("*", "pause", {"by": "operator"}))
    for i in range(30):
        store.append(Event("crr", "decision", {"reason": f"cycle {i}"}))
    store.append(
        Event("crr", "failover", {"refused": "no failover: lag 31m"}, step="check", phase="after")
    )
    store.append(Event("crr", "resume", {}))
    tail = store.recent_events("crr", limit=3)
    assert [e.kind for e in tail] == ["decision", "failover", "resume"]
    assert [e.kind for e in store.recent_events(limit=2)] == ["failover", "resume"]
    last = store.last_event(["*", "crr"], ["pause", "resume"])
    assert last is not None and last.kind == "resume"
    assert last.id == tail[-1].id
    paused = store.last_event(["*"], ["pause", "resume"])
    assert paused is not None and paused.kind == "pause"
    refused = store.last_event(["crr"], ["failover"], with_key="refused")
    assert refused is not None and refused.detail["refused"] == "no failover: lag 31m"
    assert refused.id == tail[1].id
    assert store.last_event(["crr"], ["decision"], with_key="refused") is None
    assert store.last_event(["other"], ["pause"]) is None
    assert store.count_events("crr", "check", "after") == 1
    assert store.count_events("crr", "check", "before") == 0


def test_the_last_event_of_each_volume_is_found_for_many_volumes_in_one_call(
    store: Store,
) -> None:
    volumes = [f"vol{i:03d}" for i in range(150)]  # more pairs than one etcd transaction
    store.append(Event("*", "pause", {"by": "operator"}))
    for volume in volumes[:100]:
        store.append(Event(volume, "pause", {}))
        store.append(Event(volume, "decision", {"reason": "no action"}))
    for volume in volumes[:50]:
        store.append(Event(volume, "resume", {}))
    store.append(Event("odd/name", "resume", {}))

    last = store.last_events(["*", "odd/name", *volumes], ["pause", "resume"])

    assert last["*"].kind == "pause"
    assert last["odd/name"].kind == "resume"
    assert {last[v].kind for v in volumes[:50]} == {"resume"}
    assert {last[v].kind for v in volumes[50:100]} == {"pause"}
    assert not set(volumes[100:]) & set(last)
    for volume in ("*", "odd/name", volumes[0], volumes[70]):
        alone = store.last_event([volume], ["pause", "resume"])
        assert alone is not None and last[volume].id == alone.id
    assert store.last_events([], ["pause"]) == {}


# -- workflows ---------------------------------------------------------------------------


def test_a_volume_runs_one_workflow_at_a_time_and_resumes_from_its_step(
    backend: Backend, store: Store
) -> None:
    running = store.start_workflow("crr", "failover", {"from": "site1"})
    with pytest.raises(StoreError, match="volume crr already runs a workflow"):
        backend.open().start_workflow("crr", "failback", {})
    other = store.start_workflow("lab", "failover-read-only", {})  # another volume may
    store.advance_workflow(running.id, 3, {"from": "site1", "broken": True})
    # A controller restarted here finds the workflow and the step to run next.
    resumed = backend.open().running_workflow("crr")
    assert resumed is not None
    assert (resumed.id, resumed.kind, resumed.status) == (running.id, "failover", "running")
    assert (resumed.step, resumed.data) == (3, {"from": "site1", "broken": True})
    store.finish_workflow(running.id, "done")
    assert store.running_workflow("crr") is None
    last = store.last_workflow("crr")
    assert last is not None and (last.id, last.status, last.step) == (running.id, "done", 3)
    again = store.start_workflow("crr", "failback", {})
    assert again.id > running.id and again.id != other.id
    latest = store.last_workflow("crr")
    assert latest is not None and latest.id == again.id


def test_finishing_a_workflow_twice_keeps_the_first_status(backend: Backend, store: Store) -> None:
    workflow = store.start_workflow("crr", "failover", {})
    store.finish_workflow(workflow.id, "refused")
    backend.open().finish_workflow(workflow.id, "done")  # another store object, by id alone
    last = store.last_workflow("crr")
    assert last is not None and last.status == "refused"
    assert store.last_workflow("lab") is None and store.running_workflow("lab") is None


def test_advancing_a_workflow_from_another_store_object_keeps_its_status(
    backend: Backend, store: Store
) -> None:
    workflow = store.start_workflow("crr", "failback", {"a": 1})
    backend.open().advance_workflow(workflow.id, 2, {"a": 2})
    running = store.running_workflow("crr")
    assert running is not None and (running.status, running.step) == ("running", 2)


def test_every_running_workflow_is_found_in_one_call(backend: Backend, store: Store) -> None:
    started = {
        f"vol{i:03d}": store.start_workflow(f"vol{i:03d}", "failover", {}) for i in range(70)
    }
    store.advance_workflow(started["vol001"].id, 2, {"broken": True})
    store.finish_workflow(started["vol002"].id, "done")

    running = backend.open().running_workflows()

    assert set(running) == set(started) - {"vol002"}
    assert (running["vol001"].step, running["vol001"].data) == (2, {"broken": True})
    assert running["vol003"] == store.running_workflow("vol003")


# -- the leader lease ----------------------------------------------------------------------


def test_only_one_holder_has_the_lease_until_it_is_released(backend: Backend, store: Store) -> None:
    other = backend.open()
    assert store.acquire_lease("leader", "ctl-a", ttl=30)
    assert not other.acquire_lease("leader", "ctl-b", ttl=30)
    assert store.acquire_lease("leader", "ctl-a", ttl=30)  # renewed
    assert other.lease_holder("leader") == "ctl-a"
    other.release_lease("leader", "ctl-b")  # not its lease: nothing happens
    assert store.lease_holder("leader") == "ctl-a"
    store.release_lease("leader", "ctl-a")
    assert other.lease_holder("leader") is None
    assert other.acquire_lease("leader", "ctl-b", ttl=30)
    assert not store.acquire_lease("leader", "ctl-a", ttl=30)
    assert store.lease_holder("leader") == "ctl-b"
    store.release_lease("leader", "ctl-a")  # a release of a lease not held is harmless


def test_a_lease_not_renewed_expires_and_another_holder_takes_it(
    backend: Backend, store: Store
) -> None:
    other = backend.open()
    assert store.acquire_lease("leader", "ctl-a", ttl=1)
    assert not other.acquire_lease("leader", "ctl-b", ttl=1)
    until(lambda: other.lease_holder("leader") is None, "the unrenewed lease expires")
    assert other.acquire_lease("leader", "ctl-b", ttl=30)
    # The old holder's renewal tells the truth: it lost the lease.
    assert not store.acquire_lease("leader", "ctl-a", ttl=30)
    assert store.lease_holder("leader") == "ctl-b"


def test_leases_of_different_names_are_independent(backend: Backend, store: Store) -> None:
    assert store.acquire_lease("controller", "ctl-a", ttl=30)
    assert backend.open().acquire_lease("other", "ctl-b", ttl=30)
    assert store.lease_holder("other") == "ctl-b"
