"""The storage fence of a failed-over volume: its states, its record, and its tries.

A read-write failover fences the old source twice: in the maps the agents render
(``fence-source``) and at the storage (``Provider.fence``), so that a client no map steers
cannot write to it when it returns. The old source usually does not answer then (its zone
is down), so the failover only tries once and leaves the fence pending; the controller
tries again each cycle until the storage takes it, and a failback does it first.

The journal is the record: each ``storage-fence`` event holds the whole record, and the
newest one is the state, so a controller killed at any point finds it as it was. What the
fence replaces is journaled (``fencing``) before the storage is changed, and the first
saved state is kept over any later answer: after a crash mid-fence the storage already
shows the fence, and only the journal still knows what it replaced.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from types import MappingProxyType

from nfs_failover.errors import NfsFailoverError, ProviderError
from nfs_failover.replication import Provider, Saved
from nfs_failover.store import Event, Store

log = logging.getLogger(__name__)

KIND = "storage-fence"  # the journal's kind of event
FIRST_TRY = 5.0  # seconds the failover gives its one try: the old source is usually down
RETRY_TIMEOUT = 30.0  # seconds each of the loop's tries may take (a cloud update is slow)
RETRY_EVERY = 5.0  # seconds at least between the end of one try of the loop and the next
SAVED_CRASH = "storage-fence:saved"  # NFS_FAILOVER_CRASH_AT: exit once saved is journaled


class FenceState(StrEnum):
    PENDING = "pending"  # wanted; the storage has not taken it yet
    FENCING = "fencing"  # what it replaces is journaled; the storage is being changed
    FENCED = "fenced"  # the storage refuses writes on the replica
    UNFENCED = "unfenced"  # restored by the failback: no fence any more
    UNSUPPORTED = "unsupported"  # the provider cannot fence at the storage: maps only


class Happened(StrEnum):
    WANTED = "wanted"  # a failover fenced the maps
    SAVING = "saving"  # the provider is about to change the storage; saved is journaled
    DONE = "done"  # the provider reports the replica fenced
    FAILED = "failed"  # a try failed: the replica (or the storage's API) did not answer
    CANNOT = "cannot"  # the provider has no storage fence
    RESTORED = "restored"  # the failback gave the replica back what the fence replaced


@dataclass(frozen=True)
class Rule:
    to: FenceState
    reason: str  # a sentence; placeholders {replica} {error}


_S, _H = FenceState, Happened
_TRYING = "storage fence of {replica} pending: {error}; tried again each cycle"
TRANSITIONS: Mapping[tuple[FenceState, Happened], Rule] = MappingProxyType(
    {
        (_S.UNFENCED, _H.WANTED): Rule(
            _S.PENDING, "storage fence of {replica} wanted: the failover fenced its maps"
        ),
        (_S.PENDING, _H.SAVING): Rule(
            _S.FENCING, "fencing {replica}: what the fence replaces is journaled"
        ),
        (_S.PENDING, _H.FAILED): Rule(_S.PENDING, _TRYING),
        (_S.PENDING, _H.DONE): Rule(_S.FENCED, "{replica} refuses writes at the storage"),
        (_S.PENDING, _H.CANNOT): Rule(
            _S.UNSUPPORTED, "no storage fence for {replica}: {error}; only the maps fence it"
        ),
        # A try cut short after saving: the next one changes what is still missing.
        (_S.FENCING, _H.SAVING): Rule(_S.FENCING, "fencing {replica} again; the saved state kept"),
        (_S.FENCING, _H.FAILED): Rule(_S.FENCING, _TRYING),
        (_S.FENCING, _H.DONE): Rule(_S.FENCED, "{replica} refuses writes at the storage"),
        (_S.FENCED, _H.RESTORED): Rule(
            _S.UNFENCED, "{replica} has its export rules back: the storage fence is lifted"
        ),
        (_S.FENCING, _H.RESTORED): Rule(
            _S.UNFENCED, "{replica} has its export rules back: the storage fence is lifted"
        ),
        (_S.PENDING, _H.RESTORED): Rule(
            _S.UNFENCED, "storage fence of {replica} dropped: the storage was never changed"
        ),
        (_S.UNSUPPORTED, _H.RESTORED): Rule(
            _S.UNFENCED, "storage fence of {replica} dropped: the storage was never changed"
        ),
    }
)


@dataclass(frozen=True)
class StorageFence:
    """One volume's storage fence, as its newest journal entry records it."""

    volume: str
    replica: str
    state: FenceState
    since: float  # when the failover wanted it
    reason: str
    saved: Saved | None = None  # what the fence replaced, journaled before the change
    error: str | None = None  # why the last try failed
    workflow: int | None = None  # the failover that wanted it

    @property
    def open(self) -> bool:
        """Whether the storage fence still has to be done."""
        return self.state in (FenceState.PENDING, FenceState.FENCING)

    def detail(self) -> dict[str, object]:
        return {
            "replica": self.replica,
            "state": self.state.value,
            "since": self.since,
            "reason": self.reason,
            "saved": self.saved,
            "error": self.error,
            "workflow": self.workflow,
        }

    @classmethod
    def of(cls, event: Event) -> StorageFence | None:
        """The record an event holds, or None for one that cannot be read (logged)."""
        detail = event.detail
        try:
            saved = detail.get("saved")
            error, workflow = detail.get("error"), detail.get("workflow")
            return cls(
                volume=event.volume,
                replica=str(detail["replica"]),
                state=FenceState(str(detail["state"])),
                since=float(detail["since"]),  # type: ignore[arg-type]
                reason=str(detail.get("reason", "")),
                saved=dict(saved) if isinstance(saved, dict) else None,
                error=str(error) if error is not None else None,
                workflow=int(workflow) if isinstance(workflow, int) else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("volume %s: a storage-fence entry cannot be read: %s", event.volume, exc)
            return None

    def after(
        self, happened: Happened, *, saved: Saved | None = None, error: str | None = None
    ) -> StorageFence:
        """The record once ``happened``; a move the table does not have is a bug."""
        rule = TRANSITIONS.get((self.state, happened))
        if rule is None:
            raise ValueError(f"storage fence of {self.replica}: {happened} while {self.state}")
        kept = self.saved if self.saved is not None else saved  # the first saved state wins
        reason = rule.reason.format(replica=self.replica, error=error)
        return replace(self, state=rule.to, reason=reason, saved=kept, error=error)


def latest(store: Store, volume: str) -> StorageFence | None:
    """The volume's storage fence as the journal last recorded it, or None (blocking)."""
    event = store.last_event([volume], [KIND])
    return StorageFence.of(event) if event is not None else None


async def current(store: Store, volume: str) -> StorageFence | None:
    """``latest``, from a worker thread."""
    return await asyncio.to_thread(latest, store, volume)


async def want(store: Store, volume: str, replica: str, workflow: int | None) -> StorageFence:
    """Record that ``replica`` is to be fenced at the storage (a failover's); a fence of it
    already wanted or done is kept as it is."""
    record = await current(store, volume)
    if record is not None and record.replica == replica and record.state is not _S.UNFENCED:
        return record
    start = StorageFence(volume, replica, _S.UNFENCED, time.time(), "", workflow=workflow)
    return await _journal(store, start.after(Happened.WANTED))


Guard = Callable[[], None]  # raises when this controller may no longer act (the lease)


async def attempt(
    store: Store,
    provider: Provider,
    record: StorageFence,
    *,
    timeout: float,
    guard: Guard | None = None,
) -> StorageFence:
    """One try of an open storage fence, journaled: the saved state before the change, the
    fence once the provider reports it. A failure is journaled when its reason is new and
    returned, never raised: the fence stays open for the next try. ``guard`` is checked
    before the try and again before the storage is changed; what it raises is raised."""
    if not record.open:
        return record
    if guard is not None:
        guard()

    async def before_change(saved: Saved) -> None:
        nonlocal record
        record = await _journal(store, record.after(Happened.SAVING, saved=saved))
        _crash_here()
        if guard is not None:
            guard()  # a lease lost meanwhile: the change is the next leader's to make

    try:
        result = await provider.fence(record.replica, timeout=timeout, before_change=before_change)
    except ProviderError as exc:
        if exc.code == "unsupported":
            return await _journal(store, record.after(Happened.CANNOT, error=str(exc)))
        log.warning("volume %s: storage fence of %s: %s", record.volume, record.replica, exc)
        failed = record.after(Happened.FAILED, error=str(exc))
        return failed if record.error == failed.error else await _journal(store, failed)
    return await _journal(store, record.after(Happened.DONE, saved=result.saved))


async def lift(
    store: Store, provider: Provider, record: StorageFence, *, timeout: float
) -> StorageFence:
    """Give the replica back what the fence replaced (a failback's), journaled. A fence
    that never reached the storage is only dropped; a try cut short after saving is
    undone like a whole one."""
    if record.state in (_S.FENCED, _S.FENCING) and record.saved is not None:
        await provider.unfence(record.replica, record.saved, timeout=timeout)
    return await _journal(store, record.after(Happened.RESTORED))


class Retrier:
    """The loop's side: one try at a time per volume, in the background (a replica that
    does not answer costs the try's deadline, never a cycle), at most every RETRY_EVERY."""

    def __init__(
        self, store: Store, timeout: float = RETRY_TIMEOUT, guard: Guard | None = None
    ) -> None:
        self.store = store
        self.timeout = timeout
        self.guard = guard
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._tried: dict[str, float] = {}

    def poke(self, volume: str, provider: Provider) -> None:
        """Try the volume's open storage fence now, unless a try runs or ran lately."""
        task = self._tasks.get(volume)
        if task is not None and not task.done():
            return
        if time.monotonic() - self._tried.get(volume, float("-inf")) < RETRY_EVERY:
            return
        self._tasks[volume] = asyncio.create_task(
            self._try(volume, provider), name=f"storage-fence:{volume}"
        )

    async def settle(self) -> None:
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    def cancel(self) -> None:
        """Stop the tries in flight (the lease is lost); the journal keeps where they were."""
        for task in self._tasks.values():
            task.cancel()

    async def close(self) -> None:
        self.cancel()
        await self.settle()

    async def _try(self, volume: str, provider: Provider) -> None:
        try:
            record = await current(self.store, volume)
            if record is None or not record.open:
                return
            # A running workflow (a failback) does its own storage fence first; and only
            # a replica the maps fence is fenced at the storage (never one clients use).
            if await asyncio.to_thread(self.store.running_workflow, volume) is not None:
                return
            desired = await asyncio.to_thread(self.store.get_desired, volume)
            if desired is None or record.replica not in desired.fenced:
                return
            done = await attempt(
                self.store, provider, record, timeout=self.timeout, guard=self.guard
            )
            if not done.open:
                log.info("volume %s: %s", volume, done.reason)
        except NfsFailoverError as exc:  # the store, or the lease: the next cycle tries again
            log.warning("volume %s: storage fence not tried: %s", volume, exc)
        except Exception:  # a bug: logged as one; the next cycle tries again
            log.exception("volume %s: storage fence try failed", volume)
        finally:
            self._tried[volume] = time.monotonic()


async def _journal(store: Store, record: StorageFence) -> StorageFence:
    await asyncio.to_thread(store.append, Event(record.volume, KIND, record.detail()))
    return record


def _crash_here() -> None:
    """The workflows' test hook (``NFS_FAILOVER_CRASH_AT``), at the one point between the
    journal and the storage: exit hard once the saved state is journaled."""
    from nfs_failover.controller.workflows import CRASH_ENV, CRASH_EXIT  # noqa: PLC0415

    if os.environ.get(CRASH_ENV) == SAVED_CRASH:
        os._exit(CRASH_EXIT)
