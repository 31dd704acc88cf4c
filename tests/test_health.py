"""Endpoint health: hysteresis, the quorum of vantage points, staleness, and the sentences
that explain each state. Every timestamp is explicit: nothing sleeps, nothing is mocked."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nfs_failover.config import Policy
from nfs_failover.health import (
    TRANSITIONS,
    EndpointHealth,
    EndpointState,
    HealthSettings,
    HealthTracker,
    Observation,
    Timer,
    stale_after,
)
from nfs_failover.store import Report

UP, SUSPECT, DOWN = EndpointState.UP, EndpointState.SUSPECT, EndpointState.DOWN
RECOVERING, UNKNOWN = EndpointState.RECOVERING, EndpointState.UNKNOWN
T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC).timestamp()  # reasons show it as 12:00:00 UTC
SETTINGS = HealthSettings(failover_after=60, recover_after=30, stale_after=10)


def report(at: float, up: bool, agent: str = "controller", volume: str = "crr") -> Report:
    detail = "root GETATTR answered" if up else "nfs: no answer"
    return Report(agent, volume, "site1", up, detail, 0.01, T0 + at)


def tracker(**changes: float) -> HealthTracker:
    return HealthTracker(replace(SETTINGS, **changes))


def evaluate(health: HealthTracker, at: float, volume: str = "crr") -> EndpointHealth:
    return health.evaluate(volume, "site1", T0 + at)


def probe(health: HealthTracker, at: float, up: bool, *agents: str) -> EndpointHealth:
    """Reports from each vantage point at ``at`` (the controller's by default), then an
    evaluation at that moment."""
    for agent in agents or ("controller",):
        health.observe(report(at, up, agent))
    return evaluate(health, at)


def probes(
    health: HealthTracker, start: int, stop: int, up: bool, *agents: str
) -> list[EndpointHealth]:
    """One probe round a second, from ``start`` to ``stop`` inclusive."""
    return [probe(health, at, up, *agents) for at in range(start, stop + 1)]


def down_for_good(health: HealthTracker) -> EndpointHealth:
    """Down from 0s; confirmed down at 60s, when the grace has passed."""
    last = probes(health, 0, 60, False)[-1]
    assert last.state is DOWN
    return last


# -- unknown, up, and outages shorter than the grace ----------------------------------------


def test_an_endpoint_without_a_fresh_report_is_unknown() -> None:
    health = tracker()
    first = evaluate(health, 0)
    assert (first.state, first.since, first.changed) == (UNKNOWN, T0, False)
    assert first.reason == "unknown: no report newer than 10s"
    health.observe(report(0, False))
    later = evaluate(health, 50)
    assert (later.state, later.since, later.fresh_votes) == (UNKNOWN, T0, 0)
    assert later.reason == "unknown: no report newer than 10s"


def test_the_first_up_report_makes_an_unknown_endpoint_up() -> None:
    health = probe(tracker(), 0, True)
    assert (health.state, health.since, health.changed) == (UP, T0, True)
    assert health.reason == "up: 1 of 1 vantage points see it up"
    assert health.down_since_first_seen is None


def test_an_outage_shorter_than_the_grace_period_never_reaches_down() -> None:
    health = tracker()
    timeline = [probe(health, 0, True), *probes(health, 1, 59, False), probe(health, 60, True)]
    assert [h.state for h in timeline] == [UP] + [SUSPECT] * 59 + [UP]
    assert timeline[-2].reason == (
        "suspect: down for 58s of a 60s grace (1 of 1 vantage points see it down)"
    )
    back = timeline[-1]
    assert back.reason == "up: back after 59s down, within the 60s grace (a blip: no action)"
    assert (back.since, back.down_since_first_seen) == (T0 + 60, None)


# -- down once the grace passes ---------------------------------------------------------------


def test_down_exactly_once_the_grace_passes_with_the_votes_and_grace_in_the_reason() -> None:
    health = tracker()
    probe(health, 0, True)
    suspect = probes(health, 5, 64, False)
    assert suspect[0].reason == (
        "suspect: down for 0s of a 60s grace (1 of 1 vantage points see it down)"
    )
    assert {h.state for h in suspect} == {SUSPECT}
    assert {h.since for h in suspect} == {T0 + 5}
    almost = probe(health, 64.9, False)
    assert almost.state is SUSPECT
    assert almost.reason.startswith("suspect: down for 59.9s of a 60s grace")
    down = probe(health, 65, False)
    assert (down.state, down.changed, down.since) == (DOWN, True, T0 + 65)
    assert down.down_since_first_seen == T0 + 5
    assert down.reason == (
        "down: 1 of 1 vantage points see it down since 12:00:05 UTC (grace 60s passed)"
    )


def test_down_waits_until_a_quorum_has_seen_it_down_for_the_whole_grace() -> None:
    health = tracker(quorum=2)
    probes(health, 0, 4, False, "a")
    timeline = probes(health, 5, 65, False, "a", "b")
    assert timeline[-2].state is SUSPECT  # at 64s: "b" has seen it down for 59s only
    down = timeline[-1]
    assert (down.state, down.since, down.down_since_first_seen) == (DOWN, T0 + 65, T0 + 5)
    assert (down.down_votes, down.fresh_votes) == (2, 2)
    assert down.reason == (
        "down: 2 of 2 vantage points see it down since 12:00:05 UTC (grace 60s passed)"
    )


def test_a_late_evaluation_dates_down_from_when_the_grace_expired() -> None:
    health = tracker()
    for at in range(91):
        health.observe(report(at, False))
    down = evaluate(health, 90)
    assert (down.state, down.changed, down.since) == (DOWN, True, T0 + 60)
    assert down.down_since_first_seen == T0


# -- the quorum of vantage points -------------------------------------------------------------


def test_with_quorum_two_one_down_vote_of_three_is_not_enough() -> None:
    health = tracker(quorum=2)
    for at in range(101):
        health.observe(report(at, False, "a"))
        health.observe(report(at, True, "b"))
        health.observe(report(at, True, "c"))
    seen = evaluate(health, 100)
    assert (seen.state, seen.down_votes, seen.fresh_votes) == (UP, 1, 3)
    assert seen.reason == (
        "up: 2 of 3 vantage points see it up; 1 down vote, short of the quorum of 2"
    )


def test_with_quorum_two_two_down_votes_of_three_are_enough() -> None:
    health = tracker(quorum=2)
    probe(health, 0, True, "a", "b", "c")
    for at in range(1, 62):
        health.observe(report(at, False, "a"))
        health.observe(report(at, False, "b"))
        health.observe(report(at, True, "c"))
        seen = evaluate(health, at)
        assert seen.state is (SUSPECT if at < 61 else DOWN)
    assert (seen.down_votes, seen.fresh_votes) == (2, 3)
    assert seen.reason == (
        "down: 2 of 3 vantage points see it down since 12:00:01 UTC (grace 60s passed)"
    )


@pytest.mark.parametrize(
    ("last_report_of_a", "state", "down_votes", "fresh_votes"),
    [(55, UP, 1, 2), (65, DOWN, 2, 3)],
    ids=["stale-vote-ignored", "same-vote-fresh-counts"],
)
def test_a_stale_down_vote_does_not_count_toward_the_quorum(
    last_report_of_a: int, state: EndpointState, down_votes: int, fresh_votes: int
) -> None:
    health = tracker(quorum=2)
    for at in range(71):
        if at <= last_report_of_a:
            health.observe(report(at, False, "a"))
        health.observe(report(at, False, "b"))
        health.observe(report(at, True, "c"))
    seen = evaluate(health, 70)
    assert (seen.state, seen.down_votes, seen.fresh_votes) == (state, down_votes, fresh_votes)


def test_down_votes_short_of_the_quorum_keep_the_last_state() -> None:
    health = tracker(quorum=2)
    probe(health, 0, True, "a")
    kept = probes(health, 1, 100, False, "a")[-1]
    assert (kept.state, kept.changed, kept.since) == (UP, False, T0)
    assert kept.reason == (
        "up: 1 of 1 fresh vantage points see it down, short of the quorum of 2, and none see"
        " it up, so it stays as last seen"
    )


# -- no fresh reports -------------------------------------------------------------------------


def test_without_fresh_reports_a_suspect_endpoint_does_not_escalate() -> None:
    health = tracker()
    probe(health, 0, True)
    assert probe(health, 1, False).state is SUSPECT
    silent = evaluate(health, 200)
    assert (silent.state, silent.changed, silent.fresh_votes) == (SUSPECT, False, 0)
    assert silent.reason == (
        "suspect: no report newer than 10s, so it is not confirmed down"
        " (first seen down at 12:00:01 UTC)"
    )


def test_after_a_silence_longer_than_the_staleness_limit_the_grace_starts_again() -> None:
    health = tracker()
    probe(health, 0, True)
    probe(health, 1, False)
    evaluate(health, 200)
    again = probes(health, 200, 260, False)
    assert again[0].since == T0 + 200
    assert again[0].reason.startswith("suspect: down for 0s of a 60s grace")
    assert [h.state for h in again] == [SUSPECT] * 60 + [DOWN]


def test_a_down_endpoint_stays_down_without_fresh_reports() -> None:
    health = tracker()
    down_for_good(health)
    silent = evaluate(health, 500)
    assert (silent.state, silent.since, silent.changed) == (DOWN, T0 + 60, False)
    assert silent.reason == "down: no report newer than 10s; it stays down until seen up"


# -- recovery ---------------------------------------------------------------------------------


def test_recovering_requires_recover_after_of_continuous_up() -> None:
    health = tracker()
    down_for_good(health)
    recovering = probes(health, 61, 90, True)
    assert {(h.state, h.since) for h in recovering} == {(RECOVERING, T0 + 61)}
    assert recovering[0].changed and not recovering[1].changed
    assert recovering[0].reason == "recovering: up for 0s of 30s"
    assert recovering[-1].reason == "recovering: up for 29s of 30s"
    assert recovering[-1].down_since_first_seen == T0
    up = probe(health, 91, True)
    assert (up.state, up.changed, up.since) == (UP, True, T0 + 91)
    assert up.reason == "up: up again for 30s without a break after being down"
    assert up.down_since_first_seen is None


def test_a_flap_during_recovery_returns_straight_to_down() -> None:
    health = tracker()
    down_for_good(health)
    probes(health, 61, 70, True)
    flap = probe(health, 71, False)
    assert (flap.state, flap.changed, flap.since) == (DOWN, True, T0 + 71)
    assert flap.down_since_first_seen == T0  # still the same outage
    assert flap.reason == (
        "down: seen down again while recovering; it was confirmed down before, so no new"
        " grace (1 of 1 vantage points see it down)"
    )
    again = probes(health, 72, 102, True)
    assert [h.state for h in again] == [RECOVERING] * 30 + [UP]
    assert again[0].since == T0 + 72


def test_a_flap_between_two_evaluations_still_restarts_recovery() -> None:
    health = tracker()
    down_for_good(health)
    probe(health, 61, True)
    for at in range(62, 96):
        health.observe(report(at, at != 71))  # down at 71s, seen by nobody's evaluation
    late = evaluate(health, 95)
    assert (late.state, late.since) == (RECOVERING, T0 + 72)
    assert late.reason == "recovering: up for 23s of 30s"
    assert probes(health, 96, 102, True)[-1].state is UP


def test_recovery_counts_from_when_the_down_votes_fell_below_the_quorum() -> None:
    health = tracker(quorum=2)
    probes(health, 0, 60, False, "a", "b", "c")
    for at in range(61, 81):
        health.observe(report(at, True, "a"))
        health.observe(report(at, at > 70, "b"))
        health.observe(report(at, False, "c"))
        seen = evaluate(health, at)
        assert seen.state is (DOWN if at <= 70 else RECOVERING)
    assert seen.since == T0 + 71  # not 61s, when "a" alone saw it up
    assert (seen.down_votes, seen.fresh_votes) == (1, 3)


def test_a_late_evaluation_after_a_long_recovery_goes_straight_to_up() -> None:
    health = tracker()
    down_for_good(health)
    for at in range(61, 100):
        health.observe(report(at, True))
    up = evaluate(health, 99)
    assert (up.state, up.changed, up.since) == (UP, True, T0 + 91)


# -- reports and evaluations ------------------------------------------------------------------


def test_older_reports_arriving_late_are_ignored() -> None:
    health = tracker()
    assert health.observe(report(10, True))
    assert not health.observe(report(5, False))
    assert not health.observe(report(10, False))  # as old as the one held: no newer
    assert health.observe(report(5, False, "agent-b"))  # another vantage point's own first
    seen = evaluate(health, 10)  # the controller's vote is still the up one, agent-b's down
    assert (seen.state, seen.since, seen.down_votes, seen.fresh_votes) == (SUSPECT, T0 + 5, 1, 2)


def test_changed_flags_only_on_transitions() -> None:
    health = tracker()
    timeline = [probe(health, at, up) for at, up in [(0, True), (1, False), (2, False)]]
    timeline += [probe(health, 3, True), probe(health, 4, True), evaluate(health, 4)]
    assert [(h.state, h.changed) for h in timeline] == [
        (UP, True),
        (SUSPECT, True),
        (SUSPECT, False),
        (UP, True),
        (UP, False),
        (UP, False),
    ]


def test_each_volume_uses_its_own_settings() -> None:
    fast = replace(SETTINGS, failover_after=10)
    health = HealthTracker(lambda volume: fast if volume == "lab" else SETTINGS)
    for at in range(11):
        health.observe(report(at, False, volume="lab"))
        health.observe(report(at, False, volume="crr"))
    assert evaluate(health, 10, volume="lab").state is DOWN
    assert evaluate(health, 10, volume="crr").state is SUSPECT


def test_evaluate_all_covers_every_endpoint_reported_or_evaluated_in_order() -> None:
    health = tracker()
    health.observe(Report("a", "crr", "site1", True, "ok", 0.01, T0))
    health.observe(Report("a", "crr", "dest1", False, "no answer", 0.01, T0))
    health.observe(Report("b", "alpha", "x", True, "ok", 0.01, T0))
    health.evaluate("beta", "y", T0)
    everything = health.evaluate_all(T0 + 1)
    assert [(h.volume, h.replica, h.state) for h in everything] == [
        ("alpha", "x", UP),
        ("beta", "y", UNKNOWN),
        ("crr", "dest1", SUSPECT),
        ("crr", "site1", UP),
    ]


# -- the table and the settings ---------------------------------------------------------------


def test_the_transition_table_covers_every_state_and_observation() -> None:
    assert set(TRANSITIONS) == set(itertools.product(EndpointState, Observation))


def test_no_state_moves_without_a_decided_observation() -> None:
    for state in EndpointState:
        assert TRANSITIONS[(state, Observation.UNDECIDED)].to is state


def test_every_timed_move_explains_the_wait() -> None:
    timed = [rule for rule in TRANSITIONS.values() if rule.timer is not Timer.NONE]
    assert {rule.timer for rule in timed} == {Timer.GRACE, Timer.RECOVERY}
    assert all(rule.waiting for rule in timed)


def test_stale_after_is_three_probe_intervals_and_one_probe_timeout() -> None:
    assert stale_after(Policy()) == 5.0
    policy = Policy.model_validate({"probe_interval": "2s", "probe_timeout": "500ms"})
    assert stale_after(policy) == 6.5


def test_settings_come_from_the_policy() -> None:
    settings = HealthSettings.from_policy(Policy(quorum=2))
    assert settings == HealthSettings(failover_after=60, recover_after=30, stale_after=5, quorum=2)


def test_settings_refuse_a_quorum_below_one() -> None:
    with pytest.raises(ValueError, match="quorum must be at least 1, got 0"):
        replace(SETTINGS, quorum=0)


# -- properties -------------------------------------------------------------------------------

GRACE_MS = 60_000


@st.composite
def short_outages(draw: st.DrawFn) -> list[tuple[float, bool]]:
    """Time-ordered (seconds, up) reports from one vantage point, in which every run of
    down reports is ended by an up report less than the grace after the run began."""
    reports: list[tuple[int, bool]] = []
    now = 0
    for _ in range(draw(st.integers(1, 6))):
        for _ in range(draw(st.integers(1, 4))):
            now += draw(st.integers(1, 30_000))
            reports.append((now, True))
        start = now + draw(st.integers(1, 30_000))
        span = draw(st.integers(2, GRACE_MS - 1))
        inside = draw(st.lists(st.integers(1, span - 1), max_size=12))
        reports += [(start + offset, False) for offset in sorted({0, *inside})]
        now = start + span
        reports.append((now, True))
    return [(ms / 1000, up) for ms, up in reports]


@given(reports=short_outages(), fraction=st.floats(0, 0.99))
def test_no_sequence_of_outages_shorter_than_the_grace_ever_reaches_down(
    reports: list[tuple[float, bool]], fraction: float
) -> None:
    health = tracker()
    following = [at for at, _ in reports[1:]] + [reports[-1][0] + 100]
    for (at, up), next_at in zip(reports, following, strict=True):
        health.observe(report(at, up))
        assert evaluate(health, at).state is not DOWN
        assert evaluate(health, at + (next_at - at) * fraction).state is not DOWN


@given(gaps=st.lists(st.integers(250, 9_000), min_size=1, max_size=40))
def test_an_unbroken_run_of_down_reports_reaches_down_once_the_grace_passes(
    gaps: list[int],
) -> None:
    health = tracker()
    probe(health, 0, True)
    start = 1_000
    for at_ms in itertools.accumulate(itertools.cycle(gaps), initial=start):
        seen = probe(health, at_ms / 1000, False)
        assert seen.state is (DOWN if at_ms - start >= GRACE_MS else SUSPECT)
        if seen.state is DOWN:
            assert seen.since == T0 + (start + GRACE_MS) / 1000
            break


@given(
    steps=st.lists(
        st.tuples(st.integers(0, 20_000), st.sampled_from("abc"), st.booleans()), max_size=80
    ),
    quorum=st.integers(1, 3),
)
def test_every_evaluation_keeps_its_promises(
    steps: list[tuple[int, str, bool]], quorum: int
) -> None:
    health = tracker(quorum=quorum)
    previous = UNKNOWN
    now_ms = 0
    for gap, agent, up in steps:
        now_ms += gap
        now = T0 + now_ms / 1000
        health.observe(Report(agent, "crr", "site1", up, "", 0.0, now))
        seen = health.evaluate("crr", "site1", now)
        assert seen.changed == (seen.state is not previous)
        assert seen.since <= now
        assert 0 <= seen.down_votes <= seen.fresh_votes <= 3
        in_outage = seen.state in {SUSPECT, DOWN, RECOVERING}
        assert (seen.down_since_first_seen is not None) == in_outage
        assert seen.reason.startswith(f"{seen.state}: ")
        previous = seen.state
