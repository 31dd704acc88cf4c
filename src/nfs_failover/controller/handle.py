"""What the HTTP API and the CLI see of a running controller: a narrow, typed handle."""

from __future__ import annotations

from typing import Protocol

JsonObject = dict[str, object]


class ControllerHandle(Protocol):
    """A running controller, as its API serves it.

    ``status`` returns one JSON object per volume: name, mode, state, active replica,
    fenced replicas, replication state and lag, since when, last action and its result,
    and the reason of the current decision. ``history`` returns journal entries, oldest
    first. ``request`` runs a manual command (failover, failback, switchover, pause,
    resume) and returns its result object; it raises ``NfsFailoverError`` with the
    reason when refused. ``alive`` is False when the decision loop has not completed a
    cycle within its expected interval (stuck).
    """

    def status(self) -> list[JsonObject]: ...

    def history(self, volume: str | None, after: int, limit: int) -> list[JsonObject]: ...

    def alive(self) -> bool: ...

    def metrics_state(self) -> list[JsonObject]: ...

    async def request(
        self, action: str, volume: str | None, *, force: bool = False
    ) -> JsonObject: ...
