"""What the drill reads back from the controller's journal: the workflows' events, the
instants of their steps, and the copies a failback preserved."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from nfs_failover.store import Event, Store

FAILOVER_KINDS = ("failover", "failover-read-only", "switchover")
FAILBACK_KINDS = ("failback", "failback-read-only")
# The steps whose end the timeline marks, with their words.
FAILOVER_STEPS = (
    ("break", "replication broken"),
    ("fence-source", "source fenced"),
    ("steer-to-destination", "clients steered to zone 2"),
)
FAILBACK_STEPS = (
    ("reverse-resync", "reverse resync done"),
    ("quiesce", "zone 2 read-only"),
    ("steer-back", "clients steered back"),
    ("resync-original", "original direction resynced"),
)
ALL = 100_000  # a drill's journal is far shorter


def events(store: Store, volume: str) -> list[Event]:
    """The volume's whole journal, oldest first."""
    return list(store.events(volume, after=0, limit=ALL))


def of_workflows(events: Iterable[Event], kinds: tuple[str, ...], after: float) -> list[Event]:
    """The events of workflows of ``kinds`` at or after ``after``."""
    return [e for e in events if e.kind in kinds and e.workflow is not None and e.at >= after]


def workflows_since(events: Iterable[Event], kinds: tuple[str, ...], after: float) -> set[int]:
    return {e.workflow for e in of_workflows(events, kinds, after) if e.workflow is not None}


def workflow_span(
    events: Iterable[Event], kinds: tuple[str, ...], after: float
) -> tuple[float, float]:
    """From the first to the last event of those workflows (``after`` twice: none)."""
    found = of_workflows(events, kinds, after)
    return (found[0].at, found[-1].at) if found else (after, after)


def step_at(
    events: Iterable[Event], step: str, kinds: tuple[str, ...], phase: str, after: float
) -> float | None:
    """When ``step`` of a workflow of ``kinds`` began (``phase`` "before") or ended
    ("after"), the first time at or after ``after``."""
    for e in events:
        if e.kind in kinds and e.step == step and e.phase == phase and e.at >= after:
            return e.at
    return None


def step_seconds(events: list[Event], step: str, kind: str, after: float | None) -> float | None:
    """How long ``step`` of the first workflow of ``kind`` after ``after`` took."""
    if after is None:
        return None
    before = step_at(events, step, (kind,), "before", after)
    done = step_at(events, step, (kind,), "after", after)
    return round(done - before, 3) if before is not None and done is not None else None


def step_marks(
    events: list[Event], outage: float | None, failback: float | None
) -> tuple[float | None, list[tuple[str, str, float]]]:
    """When the failover began (None: not seen), and the ends of the workflows' steps as
    (name, words, instant) for the timeline."""
    marks: list[tuple[str, str, float]] = []
    detected = None
    if outage is not None:
        begun = (e.at for e in events if e.kind in FAILOVER_KINDS and e.at >= outage)
        detected = next(begun, None)
        if detected is not None:
            marks.append(("detected", "outage confirmed: failover starts", detected))
        for step, label in FAILOVER_STEPS:
            end = step_at(events, step, FAILOVER_KINDS, "after", outage)
            if end is not None:
                marks.append((step, label, end))
    if failback is not None:
        for step, label in FAILBACK_STEPS:
            end = step_at(events, step, FAILBACK_KINDS, "after", failback)
            if end is not None:
                marks.append((step, label, end))
    return detected, marks


def preserved(store: Store, volume: str) -> tuple[dict[str, list[Path]], str]:
    """The copies the last failback preserved, by name (one name may be kept in several
    folders: the old source's and the late writes'), and where they are."""
    last = store.last_workflow(volume)
    found: dict[str, list[Path]] = {}
    folders = []
    for key, value in (last.data if last else {}).items():
        if not key.startswith("preserved_") or not isinstance(value, dict):
            continue
        folder = Path(str(value.get("folder")))
        files = [str(f) for f in value.get("files") or []]
        if files:
            folders.append(f"{len(files)} in {folder}")
        for name in files:
            found.setdefault(name, []).append(folder / name)
    return found, "; ".join(folders) or "none"
