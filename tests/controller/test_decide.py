"""The controller's decisions, each with the sentence that explains it."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from nfs_failover.config import Config, Failback, Mode, load_config
from nfs_failover.controller.decide import (
    Action,
    Decision,
    GroupObserved,
    Observed,
    VolumeState,
    decide,
    decide_group,
)
from nfs_failover.health import EndpointHealth, EndpointState
from nfs_failover.replication import MirrorState, RelationshipStatus, ReplicationStatus
from tests.helpers import EXAMPLES


@pytest.fixture
def config() -> Config:
    return load_config(EXAMPLES / "crr.yaml")


def health(replica: str, state: EndpointState, reason: str = "") -> EndpointHealth:
    return EndpointHealth("crr", replica, state, 0.0, reason or str(state), 1, 1, False)


def mirrored(lag: timedelta = timedelta(minutes=3), **changes: object) -> ReplicationStatus:
    status = ReplicationStatus(
        MirrorState.MIRRORED,
        RelationshipStatus.IDLE,
        True,
        "site1",
        "dest1",
        lag=lag,
        lag_source="snapshot",
    )
    return ReplicationStatus(**{**status.__dict__, **changes})  # type: ignore[arg-type]


def observed(
    config: Config,
    *,
    source: EndpointState = EndpointState.DOWN,
    destination: EndpointState = EndpointState.UP,
    state: VolumeState = VolumeState.NORMAL,
    replication: ReplicationStatus | None = None,
    mode: Mode = Mode.READ_WRITE,
    failback: Failback = Failback.MANUAL,
    **extra: object,
) -> Observed:
    volume = config.volumes[0].model_copy(update={"mode": mode})
    policy = config.effective_policy(volume).model_copy(update={"failback": failback})
    return Observed(
        volume=volume,
        policy=policy,
        state=state,
        source=health("site1", source, "down: 1 of 1 vantage points, grace 1m passed"),
        destination=health("dest1", destination),
        replication=replication if replication is not None else mirrored(),
        **extra,  # type: ignore[arg-type]
    )


def test_a_down_source_with_a_healthy_mirror_fails_over(config: Config) -> None:
    decision = decide(observed(config))
    assert decision.action is Action.FAILOVER
    assert decision.reason.startswith("source site1 down (down: 1 of 1 vantage points")


def test_lag_above_max_lag_refuses_the_failover_and_says_why(config: Config) -> None:
    decision = decide(observed(config, replication=mirrored(lag=timedelta(minutes=31))))
    assert (decision.action, decision.refused) == (Action.NONE, True)
    assert decision.reason == "no failover: lag 31m exceeds max_lag 20m"


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (
            mirrored(mirror_state=MirrorState.BROKEN),
            "no failover: replication is broken, not mirrored",
        ),
        (
            mirrored(healthy=False, error="transfer failed"),
            "no failover: replication is unhealthy: transfer failed",
        ),
        (mirrored(lag=None), "no failover: replication lag unknown"),
    ],
)
def test_an_unhealthy_or_unmirrored_relationship_refuses_the_failover(
    config: Config, status: ReplicationStatus, reason: str
) -> None:
    assert decide(observed(config, replication=status)).reason == reason


def test_no_replication_status_refuses_with_the_providers_words(config: Config) -> None:
    seen = observed(config)
    seen = Observed(
        **{**seen.__dict__, "replication": None, "replication_error": "AuthorizationFailed"}
    )
    assert decide(seen).reason == (
        "no failover: replication status unavailable (AuthorizationFailed)"
    )


def test_a_suspect_source_inside_its_grace_changes_nothing(config: Config) -> None:
    seen = observed(config, source=EndpointState.SUSPECT)
    assert decide(seen).action is Action.NONE


def test_nothing_to_fail_over_to_when_the_destination_is_down_too(config: Config) -> None:
    decision = decide(observed(config, destination=EndpointState.DOWN))
    assert (decision.action, decision.refused) == (Action.NONE, True)
    assert "destination dest1 is down" in decision.reason


def test_a_read_only_volume_fails_over_without_touching_replication(config: Config) -> None:
    seen = observed(config, mode=Mode.READ_ONLY, replication=mirrored(lag=timedelta(days=9)))
    assert decide(seen).action is Action.FAILOVER_READ_ONLY  # lag does not matter


def test_after_a_failover_the_back_source_waits_for_a_manual_failback(config: Config) -> None:
    seen = observed(config, source=EndpointState.UP, state=VolumeState.FAILED_OVER)
    decision = decide(seen)
    assert decision.action is Action.NONE
    assert decision.reason == (
        "source site1 is back; clients stay on dest1 until `failback crr` (failback: manual)"
    )


def test_automatic_failback_once_the_source_is_stable(config: Config) -> None:
    seen = observed(
        config,
        source=EndpointState.UP,
        state=VolumeState.FAILED_OVER_RO,
        mode=Mode.READ_ONLY,
        failback=Failback.AUTOMATIC,
    )
    assert decide(seen).action is Action.FAILBACK_READ_ONLY
    recovering = observed(
        config,
        source=EndpointState.RECOVERING,
        state=VolumeState.FAILED_OVER,
        failback=Failback.AUTOMATIC,
    )
    assert decide(recovering).action is Action.NONE


def test_pause_stops_automatic_action_and_a_running_workflow_resumes_first(
    config: Config,
) -> None:
    assert decide(observed(config, paused=True)).reason.startswith("paused")
    running = observed(config, paused=True, running_workflow="failover at step 3 (break)")
    assert decide(running).action is Action.RESUME


# -- groups ------------------------------------------------------------------------------------


def member(
    config: Config,
    name: str,
    *,
    source: EndpointState = EndpointState.UP,
    destination: EndpointState = EndpointState.UP,
    **extra: object,
) -> Observed:
    seen = observed(config, source=source, destination=destination, **extra)
    volume = seen.volume.model_copy(update={"name": name})
    reason = "down: 1 of 1 vantage points, grace 1m passed" if source is EndpointState.DOWN else ""
    return replace(
        seen,
        volume=volume,
        source=health("site1", source, reason or "up"),
        destination=health("dest1", destination),
    )


def group(*members: Observed, **extra: object) -> GroupObserved:
    return GroupObserved("app", members, **extra)  # type: ignore[arg-type]


def test_one_members_source_down_fails_the_whole_group_over(config: Config) -> None:
    decision = decide_group(
        group(member(config, "data", source=EndpointState.DOWN), member(config, "logs"))
    )
    assert decision.action is Action.FAILOVER
    assert decision.reason == (
        "source site1 of data down (down: 1 of 1 vantage points, grace 1m passed); breaking"
        " the replication of group app (data, logs)"
    )


def test_a_member_over_max_lag_refuses_the_group_and_is_named(config: Config) -> None:
    late = mirrored(lag=timedelta(minutes=31))
    decision = decide_group(
        group(
            member(config, "data", source=EndpointState.DOWN),
            member(config, "logs", replication=late),
        )
    )
    assert (decision.action, decision.refused) == (Action.NONE, True)
    assert decision.reason == (
        "no failover of group app: source site1 of data is down but logs: lag 31m exceeds"
        " max_lag 20m"
    )


def test_a_member_whose_destination_is_down_refuses_the_group(config: Config) -> None:
    decision = decide_group(
        group(
            member(config, "data", source=EndpointState.DOWN),
            member(config, "logs", destination=EndpointState.DOWN),
        )
    )
    assert (decision.action, decision.refused) == (Action.NONE, True)
    assert decision.reason == (
        "no failover of group app: source site1 of data is down but logs: destination dest1"
        " is down (down)"
    )


def test_a_group_whose_sources_are_up_does_nothing_and_says_so_per_member(config: Config) -> None:
    decision = decide_group(group(member(config, "data"), member(config, "logs")))
    reason = "no action: data: source site1 up; logs: source site1 up"
    assert decision == Decision(Action.NONE, reason)


def test_a_group_whose_members_disagree_does_nothing(config: Config) -> None:
    decision = decide_group(
        group(member(config, "data", state=VolumeState.FAILED_OVER), member(config, "logs"))
    )
    assert (decision.action, decision.refused) == (Action.NONE, True)
    assert decision.reason.startswith(
        "no action: the volumes of group app are not in one state (data failed-over, logs normal)"
    )


@pytest.mark.parametrize(
    ("failback", "action", "reason"),
    [
        (
            Failback.MANUAL,
            Action.NONE,
            "the sources of group app are back; its clients stay on the destinations until"
            " `failback app` (failback: manual)",
        ),
        (
            Failback.AUTOMATIC,
            Action.FAILBACK,
            "the sources of group app are back and stable; failing back",
        ),
    ],
)
def test_a_failed_over_group_fails_back_only_when_every_source_is_back(
    config: Config, failback: Failback, action: Action, reason: str
) -> None:
    state = VolumeState.FAILED_OVER
    back = group(
        member(config, "data", state=state, failback=failback),
        member(config, "logs", state=state, failback=failback),
    )
    assert decide_group(back) == Decision(action, reason)
    away = group(
        member(config, "data", state=state, failback=failback),
        member(config, "logs", state=state, failback=failback, source=EndpointState.DOWN),
    )
    decision = decide_group(away)
    assert decision.action is Action.NONE
    assert decision.reason.startswith("group app failed over: logs: source site1 down")


def test_a_running_group_workflow_is_resumed_and_a_paused_group_waits(config: Config) -> None:
    down = member(config, "data", source=EndpointState.DOWN)
    where = "failover of group app at step 5 (break:data)"
    resumed = decide_group(group(down, member(config, "logs"), running_workflow=where))
    assert resumed == Decision(Action.RESUME, f"resuming {where}")
    paused = decide_group(group(down, member(config, "logs"), paused=True))
    assert paused.action is Action.NONE and paused.reason.startswith("paused:")
