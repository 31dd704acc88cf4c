"""Endpoint health: turns the probe reports of one or more vantage points into up, suspect,
down, recovering or unknown per replica, with hysteresis (a grace period before down, a
recovery period before up again) and a quorum of fresh vantage points.

Owns the health state machine (one table, ``TRANSITIONS``) and the sentence that explains
each evaluation. Pure and deterministic: every call takes ``now`` (epoch seconds); no clock
reads, threads or I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import Enum, StrEnum
from types import MappingProxyType
from typing import Protocol

from nfs_failover.config import Policy

__all__ = [
    "TRANSITIONS",
    "EndpointHealth",
    "EndpointState",
    "HealthSettings",
    "HealthTracker",
    "Observation",
    "Rule",
    "Timer",
    "Vote",
    "stale_after",
]


class Vote(Protocol):
    """What one vantage point saw of one replica; ``store.Report`` is one."""

    @property
    def agent(self) -> str: ...
    @property
    def volume(self) -> str: ...
    @property
    def replica(self) -> str: ...
    @property
    def up(self) -> bool: ...
    @property
    def detail(self) -> str: ...
    @property
    def at(self) -> float: ...


class EndpointState(StrEnum):
    UP = "up"
    SUSPECT = "suspect"  # seen down, within the grace period
    DOWN = "down"  # seen down for the whole grace period
    RECOVERING = "recovering"  # seen up again after down, within the recovery period
    UNKNOWN = "unknown"  # no fresh report yet


class Observation(StrEnum):
    """What the fresh votes say, as one of three answers."""

    SEEN_DOWN = "seen down"  # at least quorum fresh down votes
    SEEN_UP = "seen up"  # not seen down, and at least one fresh up vote
    UNDECIDED = "undecided"  # no fresh vote, or down votes short of the quorum and no up vote


class Timer(Enum):
    """A wait a move must sit out before it happens, counted from when the observation began."""

    NONE = "none"
    GRACE = "failover_after"
    RECOVERY = "recover_after"


@dataclass(frozen=True)
class Rule:
    """One row of the state machine: where a state goes under one observation, and why.

    With a timer, the move waits until the observation has lasted the timer's length; until
    then the state stays and ``waiting`` explains it. Reasons are ``str.format`` templates.
    """

    to: EndpointState
    reason: str
    timer: Timer = Timer.NONE
    waiting: str = ""


_S, _O = EndpointState, Observation
_UP = "up: {up} of {fresh} vantage points see it up{minority}"
_SUSPECT = (
    "suspect: down for {elapsed} of a {grace} grace ({down} of {fresh} vantage points see it down)"
)
_DOWN = (
    "down: {down} of {fresh} vantage points see it down since {seen_since} (grace {grace} passed)"
)
_RECOVERING = "recovering: up for {elapsed} of {recover}"

TRANSITIONS: Mapping[tuple[EndpointState, Observation], Rule] = MappingProxyType(
    {
        (_S.UNKNOWN, _O.SEEN_DOWN): Rule(_S.SUSPECT, _SUSPECT),
        (_S.UNKNOWN, _O.SEEN_UP): Rule(_S.UP, _UP),
        (_S.UNKNOWN, _O.UNDECIDED): Rule(_S.UNKNOWN, "unknown: {evidence}"),
        (_S.UP, _O.SEEN_DOWN): Rule(_S.SUSPECT, _SUSPECT),
        (_S.UP, _O.SEEN_UP): Rule(_S.UP, _UP),
        (_S.UP, _O.UNDECIDED): Rule(_S.UP, "up: {evidence}, so it stays as last seen"),
        (_S.SUSPECT, _O.SEEN_DOWN): Rule(_S.DOWN, _DOWN, Timer.GRACE, waiting=_SUSPECT),
        (_S.SUSPECT, _O.SEEN_UP): Rule(
            _S.UP, "up: back after {blip} down, within the {grace} grace (a blip: no action)"
        ),
        (_S.SUSPECT, _O.UNDECIDED): Rule(
            _S.SUSPECT,
            "suspect: {evidence}, so it is not confirmed down (first seen down at {first})",
        ),
        (_S.DOWN, _O.SEEN_DOWN): Rule(_S.DOWN, _DOWN),
        (_S.DOWN, _O.SEEN_UP): Rule(_S.RECOVERING, _RECOVERING),
        (_S.DOWN, _O.UNDECIDED): Rule(_S.DOWN, "down: {evidence}; it stays down until seen up"),
        (_S.RECOVERING, _O.SEEN_DOWN): Rule(
            _S.DOWN,
            "down: seen down again while recovering; it was confirmed down before, so no new"
            " grace ({down} of {fresh} vantage points see it down)",
        ),
        (_S.RECOVERING, _O.SEEN_UP): Rule(
            _S.UP,
            "up: up again for {recover} without a break after being down",
            Timer.RECOVERY,
            waiting=_RECOVERING,
        ),
        (_S.RECOVERING, _O.UNDECIDED): Rule(
            _S.RECOVERING,
            "recovering: {evidence}; it counts as up after {recover} of fresh up reports",
        ),
    }
)

# A timed state's clock counts from when its observation began; fresh evidence of that
# observation resets the clock, so a flap that fell between two evaluations restarts it.
_CLOCKED_BY = {_S.SUSPECT: _O.SEEN_DOWN, _S.RECOVERING: _O.SEEN_UP}


@dataclass(frozen=True, kw_only=True)
class HealthSettings:
    """The hysteresis and quorum of one volume, durations in seconds."""

    failover_after: float
    recover_after: float
    stale_after: float
    quorum: int = 1

    def __post_init__(self) -> None:
        if self.quorum < 1:
            raise ValueError(f"quorum must be at least 1, got {self.quorum}")
        if min(self.failover_after, self.recover_after) < 0 or self.stale_after <= 0:
            raise ValueError(f"durations must be positive, got {self}")

    @classmethod
    def from_policy(cls, policy: Policy) -> HealthSettings:
        return cls(
            failover_after=policy.failover_after.total_seconds(),
            recover_after=policy.recover_after.total_seconds(),
            stale_after=stale_after(policy),
            quorum=policy.quorum,
        )

    def length(self, timer: Timer) -> float:
        lengths = {
            Timer.NONE: 0.0,
            Timer.GRACE: self.failover_after,
            Timer.RECOVERY: self.recover_after,
        }
        return lengths[timer]


def stale_after(policy: Policy) -> float:
    """Seconds after which a report no longer votes: a vantage point that missed three probe
    rounds and one probe's deadline has stopped telling us anything current."""
    return (3 * policy.probe_interval + policy.probe_timeout).total_seconds()


@dataclass(frozen=True)
class EndpointHealth:
    """One replica's health after an evaluation.

    ``since`` is when the current state began: for suspect, the first down sighting; for
    down, the moment the grace expired (or, after a flap while recovering, the new down
    sighting); for recovering, the first up sighting; for up, the first up sighting, or
    after recovering the moment recovery completed; for unknown, the first evaluation.
    ``down_since_first_seen`` is when the current outage was first seen down (None while up
    or unknown). ``changed`` says the state differs from the previous evaluation's.
    """

    volume: str
    replica: str
    state: EndpointState
    since: float
    reason: str
    down_votes: int
    fresh_votes: int
    changed: bool
    down_since_first_seen: float | None = None


@dataclass(frozen=True)
class _Seen:
    """The fresh votes' answer, and since when the current votes have given it."""

    kind: Observation
    since: float  # for UNDECIDED, the evaluation time: nothing is counted from it
    down: int
    up: int

    @property
    def fresh(self) -> int:
        return self.down + self.up


@dataclass(frozen=True)
class _Held:
    """A vantage point's latest report and when its current run of the same answer began."""

    vote: Vote
    streak_since: float


_Endpoint = tuple[str, str]  # (volume, replica)


class HealthTracker:
    """The latest report per (vantage point, volume, replica) and the state per replica.

    ``settings`` is one ``HealthSettings`` for every volume, or a function giving a volume's.
    """

    def __init__(self, settings: HealthSettings | Callable[[str], HealthSettings]) -> None:
        self._settings = settings
        self._votes: dict[tuple[str, str, str], _Held] = {}
        self._health: dict[_Endpoint, EndpointHealth] = {}

    def settings_for(self, volume: str) -> HealthSettings:
        if isinstance(self._settings, HealthSettings):
            return self._settings
        return self._settings(volume)

    def observe(self, vote: Vote) -> bool:
        """Keep ``vote`` unless the held report from its vantage point is as new or newer
        (reports can arrive late and out of order); True if it was kept."""
        key = (vote.agent, vote.volume, vote.replica)
        held = self._votes.get(key)
        if held is not None and vote.at <= held.vote.at:
            return False
        limit = self.settings_for(vote.volume).stale_after
        self._votes[key] = _Held(vote, _streak_since(held, vote, limit))
        return True

    def evaluate(self, volume: str, replica: str, now: float) -> EndpointHealth:
        """Advance the replica's state machine to ``now`` and return its health."""
        settings = self.settings_for(volume)
        previous = self._health.get((volume, replica)) or _unknown(volume, replica, now, settings)
        fresh = [
            held
            for (_, vol, rep), held in self._votes.items()
            if (vol, rep) == (volume, replica) and now - held.vote.at <= settings.stale_after
        ]
        health = _advance(previous, _observe(fresh, settings, now), now, settings)
        self._health[(volume, replica)] = health
        return health

    def evaluate_all(self, now: float) -> tuple[EndpointHealth, ...]:
        """Evaluate every replica reported on or evaluated before, by volume then replica."""
        endpoints = {(vol, rep) for _, vol, rep in self._votes} | set(self._health)
        return tuple(self.evaluate(vol, rep, now) for vol, rep in sorted(endpoints))


def _streak_since(held: _Held | None, vote: Vote, limit: float) -> float:
    # A silence longer than the staleness limit breaks the run: nobody saw it in between.
    if held is None or held.vote.up != vote.up or vote.at - held.vote.at > limit:
        return vote.at
    return held.streak_since


def _observe(fresh: Iterable[_Held], settings: HealthSettings, now: float) -> _Seen:
    """Seen down by quorum, seen up, or undecided, and since when.

    Seen down since the quorum-th earliest start of the down runs: from then on at least
    quorum vantage points have said down. Seen up since the latest up-run start that the
    verdict needs: before an up run began, that vantage point said down.
    """
    down = sorted(held.streak_since for held in fresh if not held.vote.up)
    up = sorted(held.streak_since for held in fresh if held.vote.up)
    quorum = settings.quorum
    if len(down) >= quorum:
        return _Seen(Observation.SEEN_DOWN, down[quorum - 1], len(down), len(up))
    if up:
        # Going back in time past an up run's start turns that vote into a down vote; the
        # verdict survives (quorum - 1 - len(down)) such losses, the latest starts first.
        since = up[max(0, len(up) - quorum + len(down))]
        return _Seen(Observation.SEEN_UP, since, len(down), len(up))
    return _Seen(Observation.UNDECIDED, now, len(down), 0)


def _unknown(volume: str, replica: str, now: float, settings: HealthSettings) -> EndpointHealth:
    reason = f"unknown: no report newer than {_seconds(settings.stale_after)}"
    return EndpointHealth(volume, replica, EndpointState.UNKNOWN, now, reason, 0, 0, False)


def _advance(
    previous: EndpointHealth, seen: _Seen, now: float, settings: HealthSettings
) -> EndpointHealth:
    """Follow the table until the state settles, so a late evaluation lands where a timely
    one would have (suspect then down, or recovering then up, in one call)."""
    current = _step(previous, seen, now, settings)
    for _ in EndpointState:  # the table has no cycles; this bounds the walk all the same
        following = _step(current, seen, now, settings)
        if following.state is current.state:
            break
        current = following
    return replace(current, changed=current.state is not previous.state)


def _step(
    previous: EndpointHealth, seen: _Seen, now: float, settings: HealthSettings
) -> EndpointHealth:
    rule = TRANSITIONS[(previous.state, seen.kind)]
    moves = _timer_ran_out(rule.timer, seen, now, settings)
    state = rule.to if moves else previous.state
    if state is not previous.state:
        since = seen.since + settings.length(rule.timer)
    elif _CLOCKED_BY.get(state) is seen.kind:
        since = seen.since
    else:
        since = previous.since
    health = EndpointHealth(
        volume=previous.volume,
        replica=previous.replica,
        state=state,
        since=since,
        reason="",
        down_votes=seen.down,
        fresh_votes=seen.fresh,
        changed=state is not previous.state,
        down_since_first_seen=_first_seen_down(previous, state, seen),
    )
    template = rule.reason if moves else rule.waiting
    return replace(
        health, reason=_explain(template, previous, health, seen, now=now, settings=settings)
    )


def _timer_ran_out(timer: Timer, seen: _Seen, now: float, settings: HealthSettings) -> bool:
    """The one time condition: a timed move waits until its observation has lasted the
    timer's length (the grace before down, the recovery before up)."""
    return timer is Timer.NONE or now - seen.since >= settings.length(timer)


def _first_seen_down(previous: EndpointHealth, state: EndpointState, seen: _Seen) -> float | None:
    if state in {EndpointState.UP, EndpointState.UNKNOWN}:
        return None
    starts_outage = previous.state in {_S.UP, _S.UNKNOWN, _S.SUSPECT}
    if seen.kind is Observation.SEEN_DOWN and starts_outage:
        return seen.since
    return previous.down_since_first_seen


def _explain(
    template: str,
    previous: EndpointHealth,
    health: EndpointHealth,
    seen: _Seen,
    *,
    now: float,
    settings: HealthSettings,
) -> str:
    first = health.down_since_first_seen
    return template.format(
        up=seen.up,
        down=seen.down,
        fresh=seen.fresh,
        grace=_seconds(settings.failover_after),
        recover=_seconds(settings.recover_after),
        elapsed=_seconds(now - health.since),
        blip=_seconds(health.since - previous.since),
        seen_since=_clock(seen.since),
        first=_clock(health.since if first is None else first),
        evidence=_evidence(seen, settings),
        minority=_minority(seen, settings),
    )


def _evidence(seen: _Seen, settings: HealthSettings) -> str:
    if not seen.fresh:
        return f"no report newer than {_seconds(settings.stale_after)}"
    return (
        f"{seen.down} of {seen.fresh} fresh vantage points see it down, short of the quorum"
        f" of {settings.quorum}, and none see it up"
    )


def _minority(seen: _Seen, settings: HealthSettings) -> str:
    if not seen.down:
        return ""
    votes = "vote" if seen.down == 1 else "votes"
    return f"; {seen.down} down {votes}, short of the quorum of {settings.quorum}"


def _seconds(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0") + "s"


def _clock(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%H:%M:%S UTC")
