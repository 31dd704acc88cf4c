"""A recording ``ControllerHandle``: the API's and the CLI's tests run against it.

Every reply is built from the controller's own snapshot models, so a fake that drifts
from the contract (a state that does not exist, a key the controller does not send)
fails where it is built, and ``tests/test_api.py`` checks each reply against the route's
response model as well.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from pydantic import BaseModel

from nfs_failover.config import Mode
from nfs_failover.controller.handle import ControllerHandle
from nfs_failover.controller.snapshot import (
    AbortResult,
    ActionResult,
    JournalEntry,
    LatencySample,
    PauseResult,
    PreservedCopy,
    VolumeMetrics,
    VolumeState,
    VolumeStatus,
    WorkflowResult,
)
from nfs_failover.errors import NfsFailoverError
from nfs_failover.replication import MirrorState
from nfs_failover.store import StoreError

M = TypeVar("M", bound=BaseModel)
LEADER = "controller@ctl-a:4242"


def changed(model: M, **changes: object) -> M:
    """``model`` with ``changes``, validated again (``model_copy`` would not validate)."""
    return model.model_validate({**model.model_dump(), **changes})


def crr_status() -> VolumeStatus:
    return VolumeStatus(
        name="crr",
        mode=Mode.READ_WRITE,
        state=VolumeState.NORMAL,
        active="az1",
        offered=("az1",),
        fenced=(),
        replication=MirrorState.MIRRORED,
        lag_s=42.5,
        health={"az1": "up", "az2": "up"},
        last_action="failback: done",
        since=1_700_000_000.0,
        decision="no action: source az1 up",
        preserved=(
            PreservedCopy.model_validate(
                {"from": "az1", "folder": "/var/lib/p/1/old-source", "files": ["a"], "deleted": []}
            ),
        ),
        paused=False,
        leader=LEADER,
        store_error=None,
    )


def tools_status() -> VolumeStatus:
    return VolumeStatus(
        name="tools",
        mode=Mode.READ_ONLY,
        state=VolumeState.FAILED_OVER_RO,
        active="az2",
        offered=("az2",),
        fenced=(),
        replication=MirrorState.MIRRORED,
        lag_s=None,
        health={"az1": "down for 1m (no answer)", "az2": "up"},
        last_action="failover-read-only: done",
        since=1_700_000_100.0,
        decision="failed over: clients read from az2; source az1 down for 1m (no answer)",
        preserved=(),
        paused=True,
        leader=LEADER,
        store_error=None,
    )


class RecordingController:
    """A ControllerHandle with two volumes that records every call it gets."""

    def __init__(self) -> None:
        self.volumes: list[VolumeStatus] = [crr_status(), tools_status()]
        self.journal: list[JournalEntry] = [
            JournalEntry(
                volume="crr" if i % 2 else "tools",
                kind="decision",
                detail={"action": "none", "reason": f"e{i}"},
                workflow=None,
                step="",
                phase="",
                at=1_700_000_000.0 + i,
                id=i,
            )
            for i in range(1, 7)
        ]
        self.metrics: list[VolumeMetrics] = [
            VolumeMetrics(
                volume="crr",
                state=VolumeState.NORMAL,
                replication_lag_seconds=42.5,
                failovers_total=0,
                probe_latency_seconds=(
                    LatencySample(replica="az1", seconds=0.002),
                    LatencySample(replica="az1", seconds=0.02),
                    LatencySample(replica="az1", seconds=0.3),
                    LatencySample(replica="az2", seconds=0.004),
                ),
            ),
            VolumeMetrics(
                volume="tools",
                state=VolumeState.FAILED_OVER_RO,
                replication_lag_seconds=None,
                failovers_total=3,
                probe_latency_seconds=(),
            ),
        ]
        self.is_alive = True
        self.refusal: str | None = None
        self.store_error: str | None = None  # history raises it, as a store without answer
        self.requests: list[tuple[str, str | None, bool]] = []
        self.history_asked: list[tuple[str | None, int, int]] = []
        self.scrapes = 0

    def status(self) -> Sequence[VolumeStatus]:
        return list(self.volumes)

    def history(self, volume: str | None, after: int, limit: int) -> Sequence[JournalEntry]:
        self.history_asked.append((volume, after, limit))
        if self.store_error is not None:
            raise StoreError(self.store_error)
        entries = [e for e in self.journal if volume is None or e.volume == volume]
        return [e for e in entries if e.id > after][:limit]

    def alive(self) -> bool:
        return self.is_alive

    def metrics_state(self) -> Sequence[VolumeMetrics]:
        self.scrapes += 1
        return self.metrics

    async def request(
        self, action: str, volume: str | None, *, force: bool = False
    ) -> ActionResult:
        self.requests.append((action, volume, force))
        if self.refusal is not None:
            raise NfsFailoverError(self.refusal)
        return reply_to(action, volume, workflow=len(self.requests))


def reply_to(action: str, volume: str | None, *, workflow: int = 1) -> ActionResult:
    """What the controller answers to ``action`` once it is done."""
    if action in ("pause", "resume"):
        return PauseResult.model_validate({"action": action, "volume": volume or "*", "done": True})
    if action == "abort":
        return AbortResult(
            action="abort",
            volume=str(volume),
            workflow=workflow,
            kind="failover",
            at="check-replication",
            state=VolumeState.NORMAL,
        )
    return WorkflowResult.model_validate(
        {"action": action, "volume": volume, "workflow": workflow, "status": "done"}
    )


def as_handle(fake: RecordingController) -> ControllerHandle:
    return fake  # checks the fake against the Protocol
