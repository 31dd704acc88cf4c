"""The data path on plain folders: a transfer of the tracked changes leaves the destination
exactly as a walk of the whole tree (``rsync -a --delete``, the engine's options) does."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nfs_failover.errors import ProviderTimeout
from nfs_failover.pacing import Deadline
from nfs_failover.replication import rsync
from nfs_failover.replication.manifest import Manifest, walk
from nfs_failover.replication.tracker import STARTED, Tracker
from nfs_failover.replication.transfer import Transferred, transfer
from tests.replication.trees import Changes, differences, snapshot

pytestmark = pytest.mark.skipif(shutil.which("rsync") is None, reason="needs rsync")

T = 30.0


class Pair:
    """A source with its tracker, the engine's destination and a destination that plain
    walks of the whole tree keep."""

    def __init__(self, base: Path) -> None:
        self.source, self.ours, self.theirs = base / "source", base / "ours", base / "theirs"
        self.outside = base / "outside"
        for folder in (self.source, self.outside):
            folder.mkdir()
        self.manifest = Manifest(base / "manifest.db")
        self.tracker = Tracker(self.source)

    def transfer(self, walk: str | None = None, deadline: float = T) -> Transferred:
        return asyncio.run(
            transfer(
                self.source,
                self.ours,
                self.manifest,
                Deadline(deadline),
                tracker=self.tracker,
                walk=walk,
            )
        )

    def walk_theirs(self) -> None:
        asyncio.run(rsync.run(self.source, self.theirs, Deadline(T)))

    def assert_same(self, what: str) -> None:
        ours, theirs = snapshot(self.ours), snapshot(self.theirs)
        assert ours == theirs, f"{what}\n{differences(ours, theirs)}"


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    made = Pair(tmp_path)
    made.tracker.start()
    try:
        yield made
    finally:
        made.tracker.close()
        made.manifest.close()


def seen_by(tracker: Tracker) -> float:
    """When the tracker's reader thread saw the first change (waiting for it, bounded)."""
    deadline = Deadline(5.0)
    while (seen := tracker.oldest()) is None:
        assert not deadline.passed(), "the tracker saw no change within 5 s"
        time.sleep(0.005)
    return seen


def seed_tree(changes: Changes, count: int) -> None:
    for _ in range(count):
        changes.one()


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_sending_the_tracked_changes_leaves_what_a_whole_walk_leaves(pair: Pair, seed: int) -> None:
    changes = Changes(pair.source, pair.outside, seed)
    seed_tree(changes, 30)
    first = pair.transfer()
    assert first.walked == STARTED
    pair.walk_theirs()
    pair.assert_same("after the first walk")
    sent = 0
    for round_ in range(12):
        start = len(changes.log)
        for _ in range(changes.rng.randint(1, 12)):
            changes.one()
        done = pair.transfer()
        pair.walk_theirs()
        sent += done.walked is None
        pair.assert_same(f"seed {seed}, round {round_}: " + "; ".join(changes.log[start:]))
    assert sent >= 6, "most rounds should send changes, not walk"


def test_the_manifest_after_sent_changes_is_the_destination(pair: Pair) -> None:
    changes = Changes(pair.source, pair.outside, 7)
    seed_tree(changes, 20)
    pair.transfer()
    for _ in range(5):
        for _ in range(5):
            changes.one()
        pair.transfer()
    assert pair.manifest.entries() == dict(walk(pair.ours))


def test_no_change_sends_nothing_and_runs_no_rsync(pair: Pair) -> None:
    (pair.source / "a").write_text("a")
    pair.transfer()
    done = pair.transfer()
    assert (done.walked, done.listed, done.files, done.sent) == (None, 0, 0, 0)


def test_a_change_sends_the_path_and_its_folder_only(pair: Pair) -> None:
    (pair.source / "sub").mkdir()
    for i in range(50):
        (pair.source / "sub" / f"f{i}").write_text("x")
    pair.transfer()
    (pair.source / "sub" / "f7").write_text("changed")
    done = pair.transfer()
    assert (done.walked, done.listed, done.files) == (None, 2, 1)  # sub/f7 and sub
    assert (pair.ours / "sub" / "f7").read_text() == "changed"


def test_a_hard_link_the_walk_did_not_see_makes_the_next_transfer_walk(pair: Pair) -> None:
    (pair.source / "a").write_text("one name")
    pair.transfer()
    os.link(pair.source / "a", pair.source / "b")
    done = pair.transfer()
    assert done.walked == "b has hard links the tracker has not seen"
    # The walk gave the tracker new watches and found both names: a change through one
    # name now sends both.
    (pair.source / "a").write_text("changed through a")
    done = pair.transfer()
    assert done.walked is None
    assert (pair.ours / "b").read_text() == "changed through a"


def test_a_change_through_one_hard_link_sends_every_name(pair: Pair) -> None:
    (pair.source / "d1").mkdir()
    (pair.source / "d2").mkdir()
    (pair.source / "d1" / "a").write_text("v1")
    os.link(pair.source / "d1" / "a", pair.source / "d2" / "b")
    pair.tracker.rewatch()  # the walk records both names
    pair.transfer()
    (pair.source / "d1" / "a").write_text("v2, longer")
    done = pair.transfer()
    assert done.walked is None
    assert (pair.ours / "d2" / "b").read_text() == "v2, longer"


def test_an_overflowing_queue_makes_the_next_transfer_walk_on_new_watches(
    tmp_path: Path,
) -> None:
    made = Pair(tmp_path)
    made.tracker = Tracker(made.source, background=False)  # nobody reads until take()
    made.tracker.start()
    try:
        made.transfer()
        limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
        names = [made.source / "a", made.source / "b"]
        for i in range(limit + 10):  # alternate names: the kernel merges repeats
            names[i % 2].write_bytes(b"x")
        (made.source / "late").write_text("after the overflow")
        done = made.transfer()
        assert done.walked == "the kernel's event queue overflowed"
        assert (made.ours / "late").read_text() == "after the overflow"
        assert made.tracker.missed is None and not made.tracker.needs_rewatch
    finally:
        made.tracker.close()
        made.manifest.close()


def test_a_failed_transfer_leaves_its_changes_pending(pair: Pair) -> None:
    (pair.source / "a").write_text("a")
    pair.transfer()
    (pair.source / "b").write_text("b")
    seen = seen_by(pair.tracker)
    with pytest.raises(ProviderTimeout, match="rsync did not finish"):
        pair.transfer(deadline=0.0)
    assert pair.tracker.oldest() == seen
    done = pair.transfer()
    assert done.walked is None and (pair.ours / "b").read_text() == "b"
    assert pair.tracker.oldest() is None
