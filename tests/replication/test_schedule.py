"""When the local engine transfers, whether it walks the whole tree, and its lag: pure
functions, tested on their exact answers and sentences."""

from __future__ import annotations

import math
from datetime import timedelta

from nfs_failover.config import LocalReplication
from nfs_failover.replication.schedule import (
    Facts,
    Tracking,
    lag,
    next_transfer,
    walk_reason,
)

NOW = 10_000.0
QUIET = Tracking(missed=None, oldest=None, last_change=None)


def settings(**fields: object) -> LocalReplication:
    base = {"provider": "local", "source_path": "/a", "destination_path": "/b"}
    return LocalReplication.model_validate({**base, **fields})


def facts(**fields: object) -> Facts:
    base: dict[str, object] = {
        "last_started": NOW - 100,
        "last_ended": NOW - 99,
        "last_full": NOW - 100,
        "unhealthy": None,
        "tracking": QUIET,
    }
    return Facts(**{**base, **fields})  # type: ignore[arg-type]


CONTINUOUS = settings(schedule="continuous", debounce="100ms")
EVERY_10S = settings(schedule="10s")


def test_the_first_transfer_and_one_after_an_interruption_walk_at_once() -> None:
    first = facts(last_started=None, last_ended=None, last_full=None)
    assert walk_reason(NOW, EVERY_10S, first) == "no transfer has completed yet"
    assert next_transfer(NOW, EVERY_10S, first) == NOW
    broken_off = facts(unhealthy="transfer started ... was interrupted")
    assert walk_reason(NOW, EVERY_10S, broken_off) == "transfer started ... was interrupted"
    assert next_transfer(NOW, EVERY_10S, broken_off) == NOW


def test_a_tracker_that_missed_events_makes_the_next_transfer_walk() -> None:
    missed = facts(tracking=Tracking("the kernel's event queue overflowed", None, None))
    assert walk_reason(NOW, CONTINUOUS, missed) == "the kernel's event queue overflowed"
    assert next_transfer(NOW, CONTINUOUS, missed) == NOW  # continuous: at once
    assert next_transfer(NOW, EVERY_10S, missed) == NOW - 90  # the schedule's slot


def test_without_a_tracker_every_transfer_walks_and_says_why() -> None:
    untracked = facts(tracking=None, untracked="the inotify watch limit is reached")
    assert walk_reason(NOW, EVERY_10S, untracked) == (
        "changes are not tracked: the inotify watch limit is reached"
    )
    assert next_transfer(NOW, EVERY_10S, untracked) == NOW - 90
    # Continuous without a tracker: walks back to back, at most half of the time.
    long_walk = facts(tracking=None, last_started=NOW - 10, last_ended=NOW - 4)
    assert next_transfer(NOW, CONTINUOUS, long_walk) == NOW + 2


def test_the_safety_walk_comes_at_its_interval_even_with_nothing_changed() -> None:
    hourly = settings(schedule="continuous", full_walk_interval="1h")
    recent = facts(last_full=NOW - 600)
    assert walk_reason(NOW, hourly, recent) is None
    assert next_transfer(NOW, hourly, recent) == NOW - 600 + 3600
    due = facts(last_full=NOW - 3600)
    assert walk_reason(NOW, hourly, due) == "the safety walk is due (every 1h)"


def test_nothing_changed_means_no_transfer_until_the_safety_walk() -> None:
    assert next_transfer(NOW, EVERY_10S, facts()) == NOW - 100 + 3600


def test_an_interval_schedule_sends_changes_at_most_once_per_interval() -> None:
    changed = facts(
        last_started=NOW - 4, tracking=Tracking(None, oldest=NOW - 3, last_change=NOW - 1)
    )
    assert next_transfer(NOW, EVERY_10S, changed) == NOW + 6


def test_continuous_transfers_once_changes_settle_for_the_debounce() -> None:
    settling = facts(tracking=Tracking(None, oldest=NOW - 0.2, last_change=NOW - 0.05))
    assert math.isclose(next_transfer(NOW, CONTINUOUS, settling), NOW + 0.05)


def test_continuous_under_steady_writes_transfers_three_debounces_after_the_oldest() -> None:
    steady = facts(tracking=Tracking(None, oldest=NOW - 0.25, last_change=NOW))
    assert math.isclose(next_transfer(NOW, CONTINUOUS, steady), NOW + 0.05)


def test_lag_is_the_age_of_the_oldest_change_not_yet_sent() -> None:
    pending = facts(tracking=Tracking(None, oldest=NOW - 0.7, last_change=NOW - 0.1))
    assert lag(NOW, pending) == (timedelta(seconds=0.7), "tracker")
    assert lag(NOW, facts()) == (timedelta(0), "tracker")  # nothing pending: none


def test_lag_without_a_trusted_tracker_is_the_age_of_the_last_transfer() -> None:
    assert lag(NOW, facts(tracking=None)) == (timedelta(seconds=100), "manifest")
    missed = facts(tracking=Tracking("the kernel's event queue overflowed", None, None))
    assert lag(NOW, missed) == (timedelta(seconds=100), "manifest")
    assert lag(NOW, facts(last_started=None)) == (None, None)
