"""The store contract: what the controller, the agents, the workflows and the API may rely
on, whichever store holds the state (sqlite on one host, etcd across many).

Written the way Patroni writes ``AbstractDCS``: for each operation, whether it is atomic,
what it compares, what a lost race returns, how long it may take, and what a caller may
assume when the store does not answer. The records it stores (``Report``, ``Event``,
``Workflow``) and its one error family (``StoreError``) live here too.

Rules for every operation, unless its docstring says otherwise:

- **Deadline.** It returns or raises within the store's ``timeout`` (5 s by default), never
  later: a dead, hung or partitioned store costs a caller one failed call, never a hang.
- **Errors.** The only error is ``StoreError``. A read that raised changed nothing. A write
  that raised may or may not have taken effect when the request was sent but its answer
  was lost (the message then says it "may have taken effect"): the caller treats it as a
  failure and reads again before it decides anything. Every write is written so that doing
  it twice does no harm, or is a compare-and-swap that a second attempt loses.
- **No answer is not an empty store.** A caller that gets ``StoreError`` assumes nothing
  about the state: the agent leaves its maps as they are, the controller decides nothing
  for that volume this cycle. "No record" (None, an empty dict) is an answer, and only an
  answer from a store that replied.
- **Whole records.** Each record is written and read whole: no reader ever sees half of a
  desired state, a report, an event or a workflow.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass

from nfs_failover.desired import VolumeDesired
from nfs_failover.errors import NfsFailoverError

log = logging.getLogger(__name__)

# A vantage point's report older than this is not returned: an agent that stopped leaves
# no vote behind. Far above any freshness window health.py applies (3 x probe_interval +
# probe_timeout), so it removes only reports that no longer count.
REPORT_TTL = 600.0


class StoreError(NfsFailoverError):
    """The store could not be read or written within its deadline, or refused the call."""


class UnreadableRecord(StoreError):
    """The store answered, but a record it holds cannot be read: the message names it. A
    caller tells it from a store that does not answer (that volume waits for a readable
    record; the others go on)."""


@dataclass(frozen=True)
class Report:
    """What one vantage point saw of one replica."""

    agent: str
    volume: str
    replica: str
    up: bool
    detail: str
    latency_s: float
    at: float


@dataclass(frozen=True)
class Event:
    """One journal entry. ``phase`` is "before" or "after" for a workflow step, else ""."""

    volume: str
    kind: str
    detail: dict[str, object]
    workflow: int | None = None
    step: str = ""
    phase: str = ""
    at: float = 0.0
    id: int = 0


@dataclass(frozen=True)
class Workflow:
    id: int
    volume: str
    kind: str
    status: str  # running, done, failed, refused, aborted
    step: int  # the index of the next step to run
    data: dict[str, object]
    started: float
    updated: float


class Store(abc.ABC):
    """The desired state, the vantage points' reports, the journal, the workflows' progress
    and the leader lease. Every method may be called from any thread (the asyncio callers
    run them in worker threads), and blocks for at most ``timeout`` seconds."""

    timeout: float

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections. Idempotent; nothing else may be called afterwards."""

    # -- the desired state ---------------------------------------------------------------

    @abc.abstractmethod
    def get_desired(self, volume: str) -> VolumeDesired | None:
        """The stored desired state of ``volume``, None when there is no record.

        Raises ``StoreError`` naming the volume when the record exists but cannot be read
        (a caller must never take an unreadable record for "no record")."""

    @abc.abstractmethod
    def all_desired(self) -> dict[str, VolumeDesired]:
        """Every readable desired state, read at one point in time. An unreadable record
        is logged (naming the volume) and left out, so that the other volumes carry on."""

    @abc.abstractmethod
    def set_desired(self, desired: VolumeDesired, *, expected_generation: int | None) -> bool:
        """Compare-and-swap: write ``desired`` whole if the stored record's generation is
        still ``expected_generation`` (None: only if there is no record yet).

        Atomic. Compares the generation only, never the rest. A lost race (another writer
        came first) returns False and changes nothing: the caller reads again. True means
        the record is now ``desired``. A record whose state cannot be read is compared by
        the generation the store can still read: sqlite keeps it in a column of its own
        and compares it; etcd keeps it inside the record, and returns False."""

    @abc.abstractmethod
    def watch_desired(self, stop: threading.Event) -> Iterator[dict[str, VolumeDesired]]:
        """Every desired state, as ``all_desired`` gives it, first at once and then again
        each time any of them changed, until ``stop`` is set (the iterator then ends
        within ``timeout``).

        Blocking: run it in a thread (``watch_desired_async`` does). Each snapshot is
        whole and newer than the one before; snapshots that follow each other closely may
        be merged into the last of them. It never raises: while the store does not
        answer it yields nothing and keeps trying, so a caller that has seen no new
        snapshot assumes nothing changed it could know of. sqlite checks for a change
        every 0.1 s (``PRAGMA data_version``, a cheap local read); etcd keeps a real
        watch open, resumes it from the last revision it saw after a dropped stream,
        reads everything again after a compaction, and every 5 minutes as a safety net.
        """

    # -- the vantage points' reports -----------------------------------------------------

    @abc.abstractmethod
    def put_report(self, report: Report) -> None:
        """Store ``report``, replacing the one before of the same agent, volume and
        replica. Idempotent (last writer wins)."""

    @abc.abstractmethod
    def reports(self, volume: str | None = None, *, now: float | None = None) -> list[Report]:
        """The latest report of each agent, volume and replica (of ``volume`` only, if
        given) whose ``at`` is at most ``REPORT_TTL`` seconds before ``now`` (default:
        the current time). Expiry is by the report's own time, on read, in both stores."""

    # -- the journal ---------------------------------------------------------------------

    @abc.abstractmethod
    def append(self, event: Event) -> int:
        """Add ``event`` at the end of the journal and return its id. Append-only: no
        entry is ever changed or removed. Ids increase in the order entries were appended
        (they need not be consecutive: etcd's are revisions). ``event.at`` 0 means now."""

    @abc.abstractmethod
    def events(
        self, volume: str | None = None, *, after: int = 0, limit: int = 10_000
    ) -> list[Event]:
        """At most ``limit`` entries with an id above ``after`` (of ``volume`` only, if
        given), oldest first: a reader pages through the journal with the last id it saw."""

    @abc.abstractmethod
    def recent_events(self, volume: str | None = None, *, limit: int = 200) -> list[Event]:
        """The newest ``limit`` entries (of ``volume`` only, if given), oldest first."""

    @abc.abstractmethod
    def last_event(
        self, volumes: Sequence[str], kinds: Sequence[str], *, with_key: str | None = None
    ) -> Event | None:
        """The newest entry of one of ``kinds`` for one of ``volumes`` (whose detail has a
        non-null ``with_key``, if given), or None. Without ``with_key`` it is cheap on
        both stores (the controller asks every cycle whether a volume is paused)."""

    @abc.abstractmethod
    def last_events(self, volumes: Sequence[str], kinds: Sequence[str]) -> dict[str, Event]:
        """For each of ``volumes`` that has one, its newest entry of one of ``kinds``, by
        volume: ``last_event([volume], kinds)`` for each, in one call (a few on etcd, one
        per 64 volume and kind pairs), whatever the number of volumes and the journal's
        length. The controller asks it every cycle whether each of its volumes is paused:
        a call per volume would make the cycle grow with the volumes."""

    @abc.abstractmethod
    def count_events(self, volume: str, step: str, phase: str) -> int:
        """How many entries of ``volume`` record ``step`` at ``phase``."""

    # -- workflows -----------------------------------------------------------------------

    @abc.abstractmethod
    def start_workflow(self, volume: str, kind: str, data: dict[str, object]) -> Workflow:
        """Record a new running workflow of ``volume`` at step 0.

        Atomic compare-and-create: at most one workflow per volume is running. A lost
        race (the volume already runs one) raises ``StoreError`` saying so and changes
        nothing. Ids increase in the order workflows were started."""

    @abc.abstractmethod
    def running_workflow(self, volume: str) -> Workflow | None:
        """The running workflow of ``volume``, or None."""

    @abc.abstractmethod
    def running_workflows(self) -> dict[str, Workflow]:
        """The running workflow of every volume that runs one, by volume, as
        ``running_workflow`` gives it; one read (on etcd, one more per 64 running
        workflows), for the controller's cycle. A workflow that finished between the
        reads is left out."""

    @abc.abstractmethod
    def last_workflow(self, volume: str) -> Workflow | None:
        """The workflow of ``volume`` started last, whatever its status, or None."""

    @abc.abstractmethod
    def advance_workflow(self, workflow: int, step: int, data: dict[str, object]) -> None:
        """Record that the steps before ``step`` are done, with the workflow's data. The
        workflow's status is kept. Idempotent: the same call twice leaves the same record."""

    @abc.abstractmethod
    def finish_workflow(self, workflow: int, status: str) -> None:
        """End a running workflow with ``status``; the volume may then start another. A
        workflow that is not running is left as it is (a repeated call does nothing)."""

    # -- the leader lease ----------------------------------------------------------------

    @abc.abstractmethod
    def acquire_lease(
        self, name: str, holder: str, ttl: float, *, timeout: float | None = None
    ) -> bool:
        """Take the lease ``name`` for ``holder``, or renew it when ``holder`` has it.

        Atomic: taking it is a create-if-absent (or, once the last holder's lease has
        expired, a compare-and-swap), so two holders never both get True for the same
        time. True means ``holder`` holds it for at least ``ttl`` seconds counted from
        when this call was sent: a caller that acts only within that time never acts
        once another holder could have it. False means another holder has it and nothing
        changed. A renewal tells the truth: it returns False once the lease was lost
        (expired, revoked, taken), never True on a lease it no longer has. A
        ``StoreError`` means the caller must act as if it had lost the lease.

        ``timeout``: this call's deadline when shorter than the store's ``timeout`` (the
        controller's lease has less validity left than that; an answer after it is of no
        use). Past it the call raises ``StoreError`` as any call past its deadline does."""

    @abc.abstractmethod
    def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up if ``holder`` has it (another holder's is left alone), so that
        a standby may take it at once. Idempotent."""

    @abc.abstractmethod
    def lease_holder(self, name: str) -> str | None:
        """Who holds the lease ``name`` now, or None."""


async def watch_desired_async(
    store: Store, stop: asyncio.Event
) -> AsyncIterator[dict[str, VolumeDesired]]:
    """``store.watch_desired`` for a coroutine: the blocking watch runs in a thread of its
    own (a daemon, so that neither the loop's executor nor the process waits for it), and
    each snapshot is handed to the loop; only the newest is kept when the consumer is
    slower than the store. Ends when ``stop`` is set or the consumer stops iterating."""
    loop = asyncio.get_running_loop()
    halt = threading.Event()
    fresh = asyncio.Event()
    ended = asyncio.Event()
    newest: list[dict[str, VolumeDesired]] = []

    def deliver(snapshot: dict[str, VolumeDesired]) -> None:
        newest[:] = [snapshot]
        fresh.set()

    def tell(callback: object, *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(callback, *args)  # type: ignore[arg-type]

    def follow() -> None:
        try:
            for snapshot in store.watch_desired(halt):
                if halt.is_set():
                    break
                tell(deliver, snapshot)
        except Exception:  # a bug: the contract says the watch never raises
            log.exception("the desired-state watch failed")
        finally:
            tell(ended.set)

    threading.Thread(target=follow, name="watch-desired", daemon=True).start()
    try:
        while not stop.is_set():
            waiters = [asyncio.ensure_future(e.wait()) for e in (fresh, stop, ended)]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
            if fresh.is_set():
                fresh.clear()
                yield newest[0]
            elif ended.is_set():
                return
    finally:
        halt.set()
