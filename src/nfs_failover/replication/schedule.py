"""When the local engine transfers next, whether that transfer walks the whole tree, and
how far the destination lags: pure functions of the clock, the settings, the last
transfers and what the change tracker says. Each walk comes with its reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

from nfs_failover.config import LocalReplication
from nfs_failover.durations import format_duration

# Under steady writes a continuous transfer starts at the latest this many debounces after
# the oldest change not yet sent: changes never settle, and the lag must stay bounded (with
# the default 100 ms, transfers take about 0.3 s apart and the lag stays under a second).
MAX_DEBOUNCES = 3
# Continuous, but no change tracking: walks back to back, each at least this far apart,
# and at most half of the time walking.
UNTRACKED_GAP = 1.0


@dataclass(frozen=True)
class Tracking:
    """What a running change tracker says: why it cannot vouch for its changes (or None),
    when the oldest change not yet on the destination and the latest change were seen."""

    missed: str | None
    oldest: float | None
    last_change: float | None


@dataclass(frozen=True)
class Facts:
    """The relationship as the schedule sees it (times are ``time.time()`` seconds)."""

    last_started: float | None  # the last completed transfer: the destination's point
    last_ended: float | None
    last_full: float | None  # when the last transfer that walked the whole tree started
    unhealthy: str | None
    tracking: Tracking | None  # None: no tracker runs
    untracked: str | None = None  # why no tracker runs, when one should


def walk_reason(now: float, settings: LocalReplication, facts: Facts) -> str | None:
    """Why a transfer starting ``now`` must walk the whole tree, or None: the tracked
    changes are exactly what it has to send."""
    if facts.last_started is None:
        return "no transfer has completed yet"
    if facts.unhealthy is not None:
        return facts.unhealthy
    if facts.tracking is None:
        why = f": {facts.untracked}" if facts.untracked else ""
        return f"changes are not tracked{why}"
    if facts.tracking.missed is not None:
        return facts.tracking.missed
    every = settings.full_walk_every()
    if facts.last_full is None or now >= facts.last_full + every.total_seconds():
        return f"the safety walk is due (every {format_duration(every)})"
    return None


def next_transfer(now: float, settings: LocalReplication, facts: Facts) -> float:
    """When the next transfer is due (``now`` or earlier: at once; ``math.inf``: not
    until something changes).

    An interval schedule transfers at most once per interval, and only when there is
    something to send (or a walk is due). ``continuous`` transfers once changes have
    settled for ``debounce``, or at the latest ``MAX_DEBOUNCES`` debounces after the
    oldest change not yet sent.
    """
    if facts.last_started is None or facts.unhealthy is not None:
        return now
    interval = settings.schedule if isinstance(settings.schedule, timedelta) else None
    slot = facts.last_started + interval.total_seconds() if interval else now
    tracking = facts.tracking
    if tracking is None:
        if interval or facts.last_ended is None:
            return slot
        took = facts.last_ended - facts.last_started
        return facts.last_ended + max(UNTRACKED_GAP, took)
    if tracking.missed is not None:
        return slot
    walk_at = (facts.last_full or 0.0) + settings.full_walk_every().total_seconds()
    changes_at = math.inf
    if tracking.oldest is not None:
        if interval:
            changes_at = slot
        else:
            debounce = settings.debounce.total_seconds()
            settled = (tracking.last_change or tracking.oldest) + debounce
            changes_at = min(settled, tracking.oldest + MAX_DEBOUNCES * debounce)
    return min(walk_at, changes_at)


def lag(now: float, facts: Facts) -> tuple[timedelta | None, str | None]:
    """How far the destination lags, and where the figure comes from.

    With a tracker that vouches for its changes: the age of the oldest change not yet
    on the destination (zero when there is none). Otherwise the age of the last
    transfer's start, which the destination holds at least.
    """
    if facts.last_started is None:
        return None, None
    tracking = facts.tracking
    if tracking is not None and tracking.missed is None and facts.unhealthy is None:
        oldest = tracking.oldest
        return timedelta(seconds=max(now - oldest, 0.0) if oldest else 0.0), "tracker"
    return timedelta(seconds=max(now - facts.last_started, 0.0)), "manifest"
