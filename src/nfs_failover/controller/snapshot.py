"""What a running controller shows of itself: frozen, typed snapshots built once per call.

The controller builds them; the API serves them as its response models (so its OpenAPI
schema documents them), the metrics collector reads them, and the CLI validates the API's
JSON back into them. Field names are the JSON keys, so a model is the wire contract.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter

from nfs_failover.config import Mode
from nfs_failover.controller.decide import VolumeState
from nfs_failover.replication import MirrorState

if TYPE_CHECKING:
    from nfs_failover.store import Event

__all__ = [
    "AbortResult",
    "ActionResult",
    "JournalEntry",
    "LatencySample",
    "PauseResult",
    "PreservedCopy",
    "Snapshot",
    "StorageFenceStatus",
    "VolumeMetrics",
    "VolumeState",
    "VolumeStatus",
    "WorkflowResult",
    "action_result",
]


class Snapshot(BaseModel):
    """A frozen model whose fields are exactly its JSON keys: an unknown key is an error."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        use_attribute_docstrings=True,
        validate_by_alias=True,
        validate_by_name=True,
        serialize_by_alias=True,
    )


class PreservedCopy(Snapshot):
    """What a failback saved before a reverse resync overwrote it."""

    source: str = Field(alias="from")
    """The replica the files were copied from."""
    folder: str
    """Where the copies are, beside the store."""
    files: tuple[str, ...]
    """Paths copied, relative to the volume's root."""
    deleted: tuple[str, ...]
    """Paths that existed only on the other side: deleted here, so nothing to copy."""


class StorageFenceStatus(Snapshot):
    """The old source's fence at the storage, beside the maps' fence: what refuses writes
    from clients no map steers."""

    replica: str
    """The replica fenced (the old source)."""
    state: Literal["pending", "fencing", "fenced", "unsupported"]
    """``pending`` until the storage takes it (tried each cycle), ``fencing`` while it is
    being changed, ``fenced`` once done; ``unsupported`` where the provider cannot."""
    since: float
    """When the failover wanted it (Unix time)."""
    replaced: dict[str, JsonValue] | None
    """What the fence replaced, as the provider saved it (export rules, access); the
    failback restores it. Null until saved."""
    reason: str
    """The last change, as one sentence."""
    error: str | None
    """Why the last try failed, while pending."""


class VolumeStatus(Snapshot):
    """One volume as the controller sees it now: ``GET /status``, ``GET /volumes/{name}``."""

    name: str
    mode: Mode
    state: VolumeState
    group: str | None = None
    """The group the volume fails over with, or null when it acts alone."""
    active: str
    """The replica clients are steered to."""
    offered: tuple[str, ...] | None
    """The replicas client maps list, in order; null before any desired state was written."""
    fenced: tuple[str, ...]
    """Replicas no client map lists until failback ends."""
    storage_fence: StorageFenceStatus | None = None
    """The old source's fence at the storage; null when there is none."""
    replication: MirrorState
    lag_s: float | None
    """Age of the newest data the destination has, in seconds; null while unknown."""
    health: dict[str, str]
    """Each replica's health, as one sentence, once it has been judged."""
    last_action: str | None
    """The last workflow and how it stands: ``"failover: done"``."""
    since: float | None
    """When the last workflow last moved (Unix time)."""
    decision: str | None
    """The current decision's sentence: ``"no failover: lag 31m exceeds max_lag 20m"``."""
    preserved: tuple[PreservedCopy, ...]
    """What the last workflow saved before overwriting it."""
    paused: bool
    leader: str | None = None
    """The controller holding the leader lease (the one that acts), or null when none
    holds it or the store does not answer."""
    store_error: str | None = None
    """Why the store did not answer, while it does not: the state, workflows and pause
    shown are then what it last said."""


class LatencySample(Snapshot):
    """One recent probe of one replica."""

    replica: str
    seconds: float


class VolumeMetrics(Snapshot):
    """What the metrics say of one volume at a scrape."""

    volume: str
    state: VolumeState
    replication_lag_seconds: float | None
    failovers_total: int | None
    """Completed ``fence-source`` steps in the journal; null while the store does not
    answer."""
    probe_latency_seconds: tuple[LatencySample, ...]
    """The recent window of probe latencies, per replica."""
    store_error: str | None = None
    """Why the store did not answer at this scrape, if it did not."""


class JournalEntry(Snapshot):
    """One journal entry: ``GET /history``, ``nfs-failover history``."""

    volume: str
    """The volume, or ``*`` for an entry about every volume (pause, resume)."""
    kind: str
    """A workflow (``failover``, ...), or ``decision``, ``pause``, ``resume``, ``abort``."""
    detail: dict[str, JsonValue]
    workflow: int | None
    step: str
    phase: str
    """``before`` or ``after`` for a workflow step, else empty."""
    at: float
    id: int

    @classmethod
    def of(cls, event: Event) -> JournalEntry:
        return cls.model_validate(asdict(event))


class PauseResult(Snapshot):
    """The answer to ``pause`` and ``resume``."""

    action: Literal["pause", "resume"]
    volume: str
    """The volume, or ``*`` for every volume."""
    done: bool


class WorkflowResult(Snapshot):
    """The answer to ``failover``, ``failback`` and ``switchover``, once the workflow is done
    (one that is refused or stops is an error with its reason instead)."""

    action: Literal["failover", "failback", "switchover"]
    volume: str
    """The volume or the group asked for."""
    workflow: int
    """The workflow's id in the journal (the group's, for a group)."""
    status: Literal["done"]
    group: str | None = None
    """The group that acted as one, or null for a volume alone."""
    members: tuple[str, ...] = ()
    """The group's volumes, every one of them moved."""
    note: str | None = None
    """Set when a member was asked for: its whole group acted."""


class AbortResult(Snapshot):
    """The answer to ``abort``: where the workflow was ended and the state it leaves."""

    action: Literal["abort"]
    volume: str
    workflow: int
    kind: str
    """The workflow aborted: ``failover``, ``failback``, ..."""
    at: str
    """The step it was at, or ``its end``."""
    state: VolumeState
    """The state the volume is left in (for a group asked by its name, its first volume's)."""
    group: str | None = None
    """The group whose workflow was aborted, or null for a volume's own."""
    states: dict[str, VolumeState] = Field(default_factory=dict)
    """For a group: the state each of its volumes is left in."""


ActionResult = Annotated[PauseResult | WorkflowResult | AbortResult, Field(discriminator="action")]
action_result: TypeAdapter[ActionResult] = TypeAdapter(ActionResult)
