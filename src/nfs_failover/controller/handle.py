"""What the HTTP API and the CLI see of a running controller: a narrow, typed handle."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from nfs_failover.controller.snapshot import (
    ActionResult,
    JournalEntry,
    VolumeMetrics,
    VolumeStatus,
)


class ControllerHandle(Protocol):
    """A running controller, as its API serves it; every answer is a frozen snapshot
    (``controller.snapshot``).

    ``status`` returns one ``VolumeStatus`` per configured volume. ``history`` returns
    journal entries, oldest first. ``request`` runs a manual command (failover, failback,
    switchover, abort, pause, resume) and returns its result; it raises
    ``NfsFailoverError`` with the reason when refused. ``alive`` is False when the
    decision loop has not completed a cycle within its expected interval (stuck).
    ``metrics_state`` is what a metrics scrape reports of each volume.
    """

    def status(self) -> Sequence[VolumeStatus]: ...

    def history(self, volume: str | None, after: int, limit: int) -> Sequence[JournalEntry]: ...

    def alive(self) -> bool: ...

    def metrics_state(self) -> Sequence[VolumeMetrics]: ...

    async def request(
        self, action: str, volume: str | None, *, force: bool = False
    ) -> ActionResult: ...
