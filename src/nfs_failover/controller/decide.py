"""What the controller would do now for one volume, and why: a pure decision.

Every decision carries the sentence that explains it ("no failover: lag 31m exceeds
max_lag 20m"), which reaches the log, the journal, ``status`` and ``plan``. Nothing here
acts or reads a clock: the caller passes what it observed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from nfs_failover.config import Failback, Mode, Policy, Volume
from nfs_failover.durations import format_duration
from nfs_failover.health import EndpointHealth, EndpointState
from nfs_failover.replication import MirrorState, ReplicationStatus


class VolumeState(StrEnum):
    """Where a volume is in its cycle (docs/controller.md, Volume states): read from its
    desired state and its running workflow (``loop.volume_state``), never stored. What
    happens inside a workflow (the break, preserving, the reverse resync) is its steps."""

    NORMAL = "normal"
    FAILED_OVER_RO = "failed-over-read-only"  # clients steered, replication untouched
    FAILED_OVER = "failed-over"  # read-write: broken, old source fenced
    FAILING_OVER = "failing-over"
    FAILING_BACK = "failing-back"


class Action(StrEnum):
    NONE = "none"
    FAILOVER_READ_ONLY = "failover-read-only"
    FAILBACK_READ_ONLY = "failback-read-only"
    FAILOVER = "failover"
    FAILBACK = "failback"
    RESUME = "resume"


@dataclass(frozen=True)
class Observed:
    """What the controller knows of one volume when it decides."""

    volume: Volume
    policy: Policy
    state: VolumeState
    source: EndpointHealth
    destination: EndpointHealth
    replication: ReplicationStatus | None  # None when the provider did not answer
    replication_error: str | None = None
    paused: bool = False
    running_workflow: str | None = None  # e.g. "failover at step 3 (break)"


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    refused: bool = False  # an action was due but a guardrail stopped it

    def __str__(self) -> str:
        return f"{self.action}: {self.reason}" if self.action is not Action.NONE else self.reason


def decide(seen: Observed) -> Decision:
    """The one thing to do now for this volume, with its reason."""
    if seen.running_workflow is not None:
        return Decision(Action.RESUME, f"resuming {seen.running_workflow}")
    if seen.paused:
        return Decision(Action.NONE, "paused: no automatic action (manual commands still run)")
    if seen.state is VolumeState.NORMAL:
        return _normal(seen)
    if seen.state is VolumeState.FAILED_OVER_RO:
        return _back(seen, Action.FAILBACK_READ_ONLY, "clients read from")
    if seen.state is VolumeState.FAILED_OVER:
        return _back(seen, Action.FAILBACK, "clients stay on")
    return Decision(Action.NONE, f"{seen.state}: waiting for its workflow")


def _normal(seen: Observed) -> Decision:
    source, destination = seen.source, seen.destination
    if source.state is not EndpointState.DOWN:
        return Decision(Action.NONE, f"no action: source {source.replica} {source.reason}")
    if destination.state is not EndpointState.UP:
        return Decision(
            Action.NONE,
            f"no failover: source {source.replica} is down but destination "
            f"{destination.replica} is {destination.state} ({destination.reason})",
            refused=True,
        )
    if seen.volume.mode is Mode.READ_ONLY:
        return Decision(
            Action.FAILOVER_READ_ONLY,
            f"source {source.replica} down ({source.reason}); clients read from "
            f"{destination.replica}",
        )
    refusal = failover_limitation(seen)
    if refusal is not None:
        return Decision(Action.NONE, f"no failover: {refusal}", refused=True)
    return Decision(
        Action.FAILOVER,
        f"source {source.replica} down ({source.reason}); breaking replication to make "
        f"{destination.replica} writable",
    )


def failover_limitation(seen: Observed) -> str | None:
    """Why a read-write failover may not happen now, or None when it may."""
    return replication_limitation(seen.replication, seen.policy, seen.replication_error)


def replication_limitation(
    status: ReplicationStatus | None, policy: Policy, error: str | None = None
) -> str | None:
    """The replication side of the guardrails: mirrored, healthy, lag within max_lag.

    ``failover --force`` overrides these, never the fencing.
    """
    if status is None:
        return f"replication status unavailable ({error or 'no answer'})"
    if status.mirror_state is not MirrorState.MIRRORED:
        return f"replication is {status.mirror_state}, not mirrored"
    if not status.healthy:
        return f"replication is unhealthy: {status.error or 'no reason given'}"
    if status.lag is None:
        return "replication lag unknown"
    if status.lag > policy.max_lag:
        return (
            f"lag {format_duration(status.lag)} exceeds max_lag {format_duration(policy.max_lag)}"
        )
    return None


def _back(seen: Observed, action: Action, clients: str) -> Decision:
    source, destination = seen.source, seen.destination
    if source.state is not EndpointState.UP:
        return Decision(
            Action.NONE,
            f"failed over: {clients} {destination.replica}; source {source.replica} "
            f"{source.reason}",
        )
    if seen.policy.failback is Failback.MANUAL:
        return Decision(
            Action.NONE,
            f"source {source.replica} is back; {clients} {destination.replica} until "
            f"`failback {seen.volume.name}` (failback: manual)",
        )
    return Decision(action, f"source {source.replica} is back and stable; failing back")


# -- groups ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupObserved:
    """What the controller knows of a group when it decides: each member observed as a
    volume alone would be (its own health, quorum, grace and guardrails)."""

    name: str
    members: tuple[Observed, ...]
    paused: bool = False  # the group, every volume, or one of its members is paused
    running_workflow: str | None = None  # the group's, e.g. "failover at step 7 (break:data)"


def decide_group(seen: GroupObserved) -> Decision:
    """The one thing to do now for the whole group, with its reason: a member's source
    down past its grace fails the group over, once every member may fail over."""
    if seen.running_workflow is not None:
        return Decision(Action.RESUME, f"resuming {seen.running_workflow}")
    if seen.paused:
        return Decision(Action.NONE, "paused: no automatic action (manual commands still run)")
    states = {member.state for member in seen.members}
    if len(states) > 1:
        shown = ", ".join(f"{m.volume.name} {m.state}" for m in seen.members)
        return Decision(
            Action.NONE,
            f"no action: the volumes of group {seen.name} are not in one state ({shown});"
            " take the group out of the config to act on each alone",
            refused=True,
        )
    (state,) = states
    if state is VolumeState.NORMAL:
        return _group_normal(seen)
    back = _FAILBACK.get(state)
    if back is not None:
        return _group_back(seen, back)
    return Decision(Action.NONE, f"{state}: waiting for its workflow")


_FAILBACK = {
    VolumeState.FAILED_OVER_RO: Action.FAILBACK_READ_ONLY,
    VolumeState.FAILED_OVER: Action.FAILBACK,
}


def _group_normal(seen: GroupObserved) -> Decision:
    down = [m for m in seen.members if m.source.state is EndpointState.DOWN]
    if not down:
        sources = "; ".join(
            f"{m.volume.name}: source {m.source.replica} {m.source.reason}" for m in seen.members
        )
        return Decision(Action.NONE, f"no action: {sources}")
    first = down[0]
    trigger = f"source {first.source.replica} of {first.volume.name}"
    refusals = [f"{m.volume.name}: {why}" for m in seen.members if (why := _member_limitation(m))]
    if refusals:
        return Decision(
            Action.NONE,
            f"no failover of group {seen.name}: {trigger} is down but {'; '.join(refusals)}",
            refused=True,
        )
    names = ", ".join(m.volume.name for m in seen.members)
    if first.volume.mode is Mode.READ_ONLY:
        return Decision(
            Action.FAILOVER_READ_ONLY,
            f"{trigger} down ({first.source.reason}); clients of group {seen.name} ({names})"
            " read from their destinations",
        )
    return Decision(
        Action.FAILOVER,
        f"{trigger} down ({first.source.reason}); breaking the replication of group"
        f" {seen.name} ({names})",
    )


def _member_limitation(seen: Observed) -> str | None:
    """Why this member may not fail over with its group now, or None."""
    destination = seen.destination
    if destination.state is not EndpointState.UP:
        return f"destination {destination.replica} is {destination.state} ({destination.reason})"
    if seen.volume.mode is Mode.READ_ONLY:
        return None
    return failover_limitation(seen)


def _group_back(seen: GroupObserved, action: Action) -> Decision:
    away = [m for m in seen.members if m.source.state is not EndpointState.UP]
    if away:
        sources = "; ".join(
            f"{m.volume.name}: source {m.source.replica} {m.source.reason}" for m in away
        )
        return Decision(Action.NONE, f"group {seen.name} failed over: {sources}")
    if any(m.policy.failback is Failback.MANUAL for m in seen.members):
        return Decision(
            Action.NONE,
            f"the sources of group {seen.name} are back; its clients stay on the destinations"
            f" until `failback {seen.name}` (failback: manual)",
        )
    return Decision(action, f"the sources of group {seen.name} are back and stable; failing back")
