"""The change tracker on a plain folder: what it records, when it says it missed events,
and that it lets go of its watches and its thread."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nfs_failover.errors import ProviderError
from nfs_failover.replication.tracker import STARTED, Tracker


@pytest.fixture
def tracker(tmp_path: Path) -> Iterator[Tracker]:
    (tmp_path / "tree").mkdir()
    made = Tracker(tmp_path / "tree", background=False)
    made.start()
    yield made
    made.close()


def changed(tracker: Tracker) -> set[str]:
    batch = tracker.take()
    tracker.settle(batch, done=True, full=False)
    return set(batch.changed)


def test_a_new_tracker_cannot_vouch_for_what_changed_before_it_started(tracker: Tracker) -> None:
    batch = tracker.take()
    assert batch.missed == STARTED
    tracker.settle(batch, done=True, full=False)
    assert tracker.missed == STARTED  # only a walk of the whole tree clears it
    tracker.settle(tracker.take(), done=True, full=True)
    assert tracker.missed is None


def test_a_walk_that_started_before_a_miss_does_not_clear_it(tracker: Tracker) -> None:
    batch = tracker.take()
    tracker.miss("something was lost")
    tracker.settle(batch, done=True, full=True)
    assert tracker.missed == "something was lost"


def test_creates_writes_and_deletes_are_recorded_by_path(tracker: Tracker) -> None:
    root = tracker.root
    (root / "a").write_text("a")
    (root / "sub").mkdir()
    (root / "sub" / "b").write_text("b")
    (root / "a").unlink()
    batch = tracker.take()
    assert set(batch.changed) == {"a", "sub"}
    assert set(batch.fresh) == {"sub"}  # sub/b: made before sub was watched


def test_files_made_in_a_new_folder_before_its_watch_are_found_by_the_transfer(
    tracker: Tracker,
) -> None:
    # The tracker reads nothing until take(): the whole tree is made before any watch.
    deep = tracker.root / "new" / "deeper"
    deep.mkdir(parents=True)
    (deep / "early").write_text("x")
    batch = tracker.take()
    assert "new" in batch.fresh  # the transfer lists everything below it
    tracker.settle(batch, done=True, full=False)
    (deep / "late").write_text("y")  # the new folder is watched now
    assert changed(tracker) == {"new/deeper/late"}


def test_a_folder_moved_within_the_tree_is_watched_under_its_new_name(tracker: Tracker) -> None:
    root = tracker.root
    (root / "old" / "inner").mkdir(parents=True)
    tracker.settle(tracker.take(), done=True, full=True)
    os.rename(root / "old", root / "new")
    batch = tracker.take()
    assert {"old", "new"} <= set(batch.changed) and set(batch.fresh) == {"new"}
    tracker.settle(batch, done=True, full=False)
    (root / "new" / "inner" / "f").write_text("x")
    assert changed(tracker) == {"new/inner/f"}


def test_a_folder_moved_out_of_the_tree_is_no_longer_watched(
    tracker: Tracker, tmp_path: Path
) -> None:
    (tracker.root / "leaving").mkdir()
    tracker.settle(tracker.take(), done=True, full=True)
    os.rename(tracker.root / "leaving", tmp_path / "gone")
    assert changed(tracker) == {"leaving"}
    (tmp_path / "gone" / "f").write_text("outside the tree now")
    assert changed(tracker) == set()


def test_moving_the_source_folder_itself_is_a_miss_that_needs_new_watches(
    tracker: Tracker, tmp_path: Path
) -> None:
    os.rename(tracker.root, tmp_path / "moved")
    tracker.take()
    assert tracker.missed == "the source folder itself was moved or deleted"
    assert tracker.needs_rewatch


def test_a_failed_transfer_puts_its_changes_back_keeping_the_oldest_time(
    tracker: Tracker,
) -> None:
    (tracker.root / "a").write_text("a")
    first = tracker.take()
    (tracker.root / "a").write_text("again")
    assert tracker.oldest() == first.changed["a"]  # the batch in flight counts
    tracker.settle(first, done=False, full=False)
    assert tracker.take().changed["a"] == first.changed["a"]


def test_the_first_change_after_a_quiet_time_is_told(tmp_path: Path) -> None:
    told = threading.Event()
    tracker = Tracker(tmp_path, on_change=told.set)
    tracker.start()
    try:
        (tmp_path / "a").write_text("a")
        assert told.wait(5.0)
    finally:
        tracker.close()


def test_close_ends_the_reader_thread_and_releases_the_watches(tmp_path: Path) -> None:
    tracker = Tracker(tmp_path)
    tracker.start()
    before = {t.name for t in threading.enumerate()}
    assert f"tracker {tmp_path}" in before
    tracker.close()
    assert f"tracker {tmp_path}" not in {t.name for t in threading.enumerate()}
    assert not tracker.running


def test_a_folder_that_does_not_exist_cannot_be_tracked(tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match="not a folder; its changes cannot be tracked"):
        Tracker(tmp_path / "missing").start()
