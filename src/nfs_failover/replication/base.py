"""The replication contract: one status model and one Provider interface for every engine.

Every provider (the embedded ``local`` engine, Azure NetApp Files, ONTAP SnapMirror) maps
its own vocabulary onto these types, so the controller never sees "Mirrored" from one
and "snapmirrored" from another.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from nfs_failover.errors import ProviderError

# A progress report: what is happening now, and the fraction done when it is known.
Progress = Callable[[str, float | None], None]


class MirrorState(StrEnum):
    UNINITIALIZED = "uninitialized"
    MIRRORED = "mirrored"
    BROKEN = "broken"
    UNKNOWN = "unknown"


class RelationshipStatus(StrEnum):
    IDLE = "idle"
    TRANSFERRING = "transferring"
    UNKNOWN = "unknown"


_MIRROR_WORDS = {
    "uninitialized": MirrorState.UNINITIALIZED,
    "mirrored": MirrorState.MIRRORED,
    "snapmirrored": MirrorState.MIRRORED,
    "in_sync": MirrorState.MIRRORED,
    "broken": MirrorState.BROKEN,
    "broken_off": MirrorState.BROKEN,
}
_STATUS_WORDS = {
    "idle": RelationshipStatus.IDLE,
    "transferring": RelationshipStatus.TRANSFERRING,
    "queued": RelationshipStatus.TRANSFERRING,
}


def normalise_mirror_state(value: str | None) -> MirrorState:
    """A provider's mirror state in any case (``"Mirrored"``, ``"snapmirrored"``); unknown
    or missing values become UNKNOWN instead of raising."""
    return _MIRROR_WORDS.get((value or "").strip().lower(), MirrorState.UNKNOWN)


def normalise_relationship_status(value: str | None) -> RelationshipStatus:
    return _STATUS_WORDS.get((value or "").strip().lower(), RelationshipStatus.UNKNOWN)


@dataclass(frozen=True)
class ReplicationStatus:
    """What a provider says about one relationship, in common terms.

    ``lag`` is now minus the point in time the destination holds; ``lag_source`` says
    where that figure came from (``manifest``, ``metrics``, ``snapshot``, ``lag_time``).
    ``source`` and ``destination`` name the replicas in the current direction, which
    changes with a reverse resync. ``raw`` keeps the provider's own words for display.
    """

    mirror_state: MirrorState
    relationship_status: RelationshipStatus
    healthy: bool
    source: str
    destination: str
    error: str | None = None
    last_transfer_bytes: int | None = None
    last_transfer_end: datetime | None = None
    lag: timedelta | None = None
    lag_source: str | None = None
    raw: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Divergence:
    """Files that changed on one side only since the last common point.

    That is exactly what a resync (``destination_only``) or a reverse resync
    (``source_only``) would overwrite. Paths are relative to the volume's root.
    """

    since: datetime | None
    source_only: tuple[str, ...]
    destination_only: tuple[str, ...]


@dataclass(frozen=True)
class OperationResult:
    """The outcome of an operation, as the provider reported it when it had finished."""

    operation: str
    status: ReplicationStatus
    changed: bool  # False when the relationship was already in the requested state
    overwritten: tuple[str, ...] = ()
    bytes_transferred: int | None = None


# What a storage fence replaced, in the provider's own terms (ANF's export policy rules,
# ONTAP's rw_rule lists, the local export's access): JSON-able, opaque to the caller, and
# given back whole to ``unfence``.
Saved = dict[str, object]
# Told what a fence is about to replace, before the storage is changed (see ``fence``).
BeforeFence = Callable[[Saved], Awaitable[None]]


@dataclass(frozen=True)
class FenceResult:
    """The outcome of a storage fence: the replica now refuses writes at the storage.

    ``saved`` is what the fence replaced, to be given back to ``unfence``; when the
    replica was already fenced (``changed`` False) it is what the provider has recorded
    of the first fence, or, for a provider that records nothing, what is there now.
    ``detail`` says what was done, in the provider's words.
    """

    replica: str
    changed: bool
    saved: Saved
    detail: str


class Provider(abc.ABC):
    """One replication relationship between a volume's two replicas.

    The contract every implementation keeps:
    - Each operation is idempotent: asking for the state the relationship is already in
      changes nothing and returns ``changed=False``.
    - Each takes ``timeout`` (seconds) and returns only once the provider reports the
      result, or raises ``ProviderTimeout``. Nothing sleeps blindly: waits poll the
      provider, bounded by the deadline.
    - Preconditions are the ANF ones: no break while uninitialized; no break while a
      transfer runs unless ``force`` (or until it ends, within the deadline); resync and
      reverse resync only when broken. A violation raises ``PreconditionError`` and
      changes nothing.
    - Every other failure raises ``ProviderError`` with the provider's own code and words.
    - ``fence`` and ``unfence`` act on one replica's exports, not on the relationship:
      they keep the same rules (idempotent, deadline), and neither changes the mirror
      state or direction.
    """

    name: str

    @abc.abstractmethod
    async def status(self, *, timeout: float) -> ReplicationStatus:
        """The relationship as the provider sees it now."""

    @abc.abstractmethod
    async def transfer_now(
        self, *, timeout: float, progress: Progress | None = None
    ) -> OperationResult:
        """Bring the destination up to date with the source now (mirrored only)."""

    @abc.abstractmethod
    async def break_(
        self, *, force: bool = False, timeout: float, progress: Progress | None = None
    ) -> OperationResult:
        """Stop replication and make the destination writable."""

    @abc.abstractmethod
    async def resync(self, *, timeout: float, progress: Progress | None = None) -> OperationResult:
        """Source to destination again after a break; the destination's changes since the
        last common point are overwritten (and listed in ``overwritten``)."""

    @abc.abstractmethod
    async def reverse_resync(
        self, *, timeout: float, progress: Progress | None = None
    ) -> OperationResult:
        """Destination to source after a break: the roles swap, and the old source's
        changes since the last common point are overwritten (and listed)."""

    @abc.abstractmethod
    async def divergence(self, *, timeout: float) -> Divergence:
        """What exists or changed on one side only since the last common point."""

    async def quiesce_source(self, *, timeout: float) -> OperationResult:
        """Make the current source refuse writes, so that one more transfer carries its
        last change: the step before a planned reversal loses nothing. Providers that
        cannot raise ``ProviderError`` with code ``unsupported``; the failback then
        relies on steering and on preserving what changed late."""
        raise ProviderError(
            f"{self.name}: cannot make the source read-only through the provider",
            code="unsupported",
        )

    async def fence(
        self, replica: str, *, timeout: float, before_change: BeforeFence | None = None
    ) -> FenceResult:
        """Make ``replica`` refuse writes at the storage, whoever mounts it: a client that
        no map steers (a hand-typed mount, a crashed agent) cannot write to it either.

        Idempotent: fencing a fenced replica changes nothing (``changed=False``). Before
        the storage is changed, ``before_change`` is awaited with what is about to be
        replaced: a caller that must never lose it (the controller journals it) records
        it there, so a crash between that and the change leaves it recorded; when it
        raises, nothing is changed. The saved state is what ``unfence`` restores; a
        caller that recorded one keeps its own record over a later fence's answer (after
        a crash mid-fence the storage already shows the fence). Within ``timeout`` or
        ``ProviderTimeout``; a replica that does not answer raises ``ProviderError``, and
        the call is simply tried again later. Providers that cannot raise
        ``ProviderError`` with code ``unsupported``.
        """
        raise ProviderError(
            f"{self.name}: cannot fence {replica} at the storage", code="unsupported"
        )

    async def unfence(self, replica: str, saved: Saved, *, timeout: float) -> OperationResult:
        """Undo ``fence``: give ``replica`` back exactly what the fence replaced
        (``saved``, as ``fence`` returned or ``before_change`` was told it).

        Idempotent: unfencing a replica that is not fenced changes nothing
        (``changed=False``). Within ``timeout`` or ``ProviderTimeout``; providers that
        cannot fence raise ``ProviderError`` with code ``unsupported``.
        """
        raise ProviderError(
            f"{self.name}: cannot unfence {replica} at the storage", code="unsupported"
        )

    async def serve(  # noqa: B027 - a schedule the storage keeps needs no driving
        self,
        stop: asyncio.Event,
        progress: Progress | None = None,
    ) -> None:
        """Run the provider's own transfer schedule until ``stop`` is set. Only an engine
        that the controller hosts (``local``) has one to run; a provider whose storage
        keeps the schedule (ANF, ONTAP) returns at once. The controller runs it beside
        its loop for every provider."""

    async def close(self) -> None:  # noqa: B027 - optional for providers holding no resources
        """Release connections; the provider is not used afterwards."""
