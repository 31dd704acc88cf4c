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
