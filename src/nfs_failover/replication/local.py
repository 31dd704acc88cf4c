"""The embedded replication engine: two exported folders kept in step with rsync.

It keeps what SnapMirror keeps: the relationship's state and direction (a JSON file,
rewritten atomically), and a manifest of the destination as the last transfer left it
(see ``manifest``), which divergence is computed from.

While it serves (``serve``), a change tracker (``tracker``) watches the source folder,
and a transfer sends only the paths that changed (``transfer``); it walks the whole tree
when the tracker cannot vouch for its changes (just started, events lost), after a crash,
and every ``full_walk_interval``. ``schedule: continuous`` transfers as soon as changes
settle. Lag is the age of the oldest change not yet on the destination; without a
tracker, the age of the last transfer's start.

Consistency: a transfer copies a live tree file by file; it is not a snapshot. The
destination holds every change made on the source before the transfer started, and
possibly some made during it. So the last common point is the transfer's *start*, and
divergence counts every source file changed since then (a few false positives around a
transfer, never a missed change). rsync's quick check compares size and mtime (to the
nanosecond): a rewrite that keeps both is not copied.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from nfs_failover import files, ganesha
from nfs_failover.config import GaneshaExport, LocalReplication, Volume
from nfs_failover.errors import PreconditionError, ProviderError, ProviderTimeout
from nfs_failover.pacing import Deadline, Pacer
from nfs_failover.probe import Prober
from nfs_failover.replication import schedule
from nfs_failover.replication.base import (
    BeforeFence,
    Divergence,
    FenceResult,
    MirrorState,
    OperationResult,
    Progress,
    Provider,
    RelationshipStatus,
    ReplicationStatus,
    Saved,
)
from nfs_failover.replication.manifest import Manifest, changed_since
from nfs_failover.replication.tracker import Tracker
from nfs_failover.replication.transfer import transfer

log = logging.getLogger(__name__)

DEFAULT_STATE_ROOT = Path("/var/lib/nfs-failover/local")
# File timestamps come from a coarse clock that may lag time.time() by a tick (<= 10 ms).
CTIME_MARGIN_NS = 20_000_000
HISTORY = 50
SCHEDULED_TIMEOUT = 6 * 3600.0  # a scheduled transfer of local folders: rsync cannot hang


REACHABLE_TIMEOUT = 2.0  # seconds for the source's NFS check before a transfer
RETRY_AFTER = 5.0  # seconds, at most, before a failed scheduled transfer is tried again
CONTINUOUS_RETRY = 1.0  # the same with schedule: continuous
RECHECK = 1.0  # seconds, at most, between two looks of the scheduler at the relationship
LOCK_WANTED_FOR = 2.0  # seconds a wish for the lock counts without being renewed


@dataclass(frozen=True)
class Transfer:
    started: float
    ended: float
    bytes: int
    files_changed: int
    full: bool


@dataclass(frozen=True)
class RelationshipState:
    """What survives a restart. ``reversed`` means replicas[1] is the source now."""

    mirror_state: str = MirrorState.UNINITIALIZED.value
    reversed: bool = False
    broken_from_reversed: bool | None = None  # the direction at the last break
    transfer_started: float | None = None  # set while a transfer runs; left by a crash
    transfer_pid: int | None = None
    unhealthy: str | None = None
    quiesced: bool = False  # the source refuses writes until the next resync
    # Replicas fenced at the storage (read-only whatever their side) until unfenced, each
    # with the access its export had before the fence.
    fenced: dict[str, str] = field(default_factory=dict)
    last_transfer: Transfer | None = None
    last_full_started: float | None = None  # the last transfer that walked the whole tree
    history: tuple[dict[str, object], ...] = field(default_factory=tuple)

    @classmethod
    def load(cls, path: Path) -> RelationshipState:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            raise ProviderError(f"{path}: unreadable relationship state ({exc})") from exc
        last = data.pop("last_transfer", None)
        data["history"] = tuple(data.get("history", ()))
        return cls(**data, last_transfer=Transfer(**last) if last else None)

    def save(self, path: Path) -> None:
        files.write_atomically(path, json.dumps(asdict(self), indent=1), mode=0o600)

    def noted(self, event: str, **details: object) -> RelationshipState:
        entry = {"at": time.time(), "event": event, **details}
        return replace(self, history=(*self.history, entry)[-HISTORY:])


class LocalProvider(Provider):
    """The ``local`` provider of one volume. Operations take a file lock, so a CLI command
    and a running controller never act on the same relationship at once."""

    name = "local"

    def __init__(self, volume: Volume, *, poll_interval: float = 0.1) -> None:
        if not isinstance(volume.replication, LocalReplication):
            raise ProviderError(f"volume {volume.name}: replication is not local")
        self.volume = volume
        self.settings = volume.replication
        self.poll_interval = poll_interval
        self.state_dir = self.settings.state_dir or DEFAULT_STATE_ROOT / volume.name
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._state_path = self.state_dir / "relationship.json"
        self._manifest = Manifest(self.state_dir / "manifest.db")
        # What the tracker of a serving engine says, for status in other processes.
        self._tracking_path = self.state_dir / "tracking.json"
        # A waiter for the lock says so here, and the scheduler lets it through.
        self._wanted_path = self.state_dir / "lock.wanted"
        self._tracker: Tracker | None = None
        self._untracked: str | None = None  # why the serving engine has no tracker
        self._untracked_root: Path | None = None  # ... on which folder
        self._tracker_lock = asyncio.Lock()  # one start or stop of the tracker at a time
        self._serving = False
        self._transferring = False  # this process runs a transfer now
        self._on_change: asyncio.Event | None = None

    async def close(self) -> None:
        async with self._tracker_lock:
            await self._stop_tracking()
        self._manifest.close()

    # -- the two sides in the current direction ----------------------------------------

    def _sides(self, state: RelationshipState) -> tuple[int, int]:
        return (1, 0) if state.reversed else (0, 1)

    def _folder(self, index: int) -> Path:
        return Path(self.settings.source_path if index == 0 else self.settings.destination_path)

    def _export(self, index: int) -> GaneshaExport | None:
        return self.settings.source_export if index == 0 else self.settings.destination_export

    # -- status ------------------------------------------------------------------------

    async def status(self, *, timeout: float) -> ReplicationStatus:
        return self._status(self._load())

    def _load(self) -> RelationshipState:
        state = RelationshipState.load(self._state_path)
        # This process's own transfer is not interrupted while it runs, even in the
        # moment its rsync has exited and is not yet reaped.
        mine = self._transferring and state.transfer_started is not None
        if state.transfer_started is not None and not mine and not _alive(state.transfer_pid):
            # A transfer was killed half way: the destination is partly written.
            started = datetime.fromtimestamp(state.transfer_started, UTC).isoformat()
            state = replace(
                state,
                transfer_started=None,
                transfer_pid=None,
                unhealthy=f"transfer started {started} was interrupted; the next transfer "
                "completes it",
            )
        return state

    def _status(self, state: RelationshipState) -> ReplicationStatus:
        source, destination = self._sides(state)
        names = [r.name for r in self.volume.replicas]
        last = state.last_transfer
        transferring = state.transfer_started is not None
        mirror = MirrorState(state.mirror_state)
        lag, lag_source = schedule.lag(time.time(), self._facts(state))
        return ReplicationStatus(
            mirror_state=mirror,
            relationship_status=(
                RelationshipStatus.TRANSFERRING if transferring else RelationshipStatus.IDLE
            ),
            healthy=state.unhealthy is None and mirror is not MirrorState.UNINITIALIZED,
            source=names[source],
            destination=names[destination],
            error=state.unhealthy,
            last_transfer_bytes=last.bytes if last else None,
            last_transfer_end=datetime.fromtimestamp(last.ended, UTC) if last else None,
            lag=lag,
            lag_source=lag_source,
            raw={
                "mirror_state": state.mirror_state,
                "direction": "reverse" if state.reversed else "forward",
            },
        )

    def _facts(self, state: RelationshipState) -> schedule.Facts:
        last = state.last_transfer
        return schedule.Facts(
            last_started=last.started if last else None,
            last_ended=last.ended if last else None,
            last_full=state.last_full_started,
            unhealthy=state.unhealthy,
            tracking=self._tracking(state),
            untracked=self._untracked if self._serving else None,
        )

    def _tracking(self, state: RelationshipState) -> schedule.Tracking | None:
        """The tracker of the current source: this process's, or a serving engine's in
        another process (as it last recorded it), or None."""
        source = self._folder(self._sides(state)[0])
        if self._serving or self._tracker is not None:
            tracker = self._tracker_of(source)
            if tracker is None:
                return None
            return schedule.Tracking(tracker.missed, tracker.oldest(), tracker.last_change())
        try:
            record = json.loads(self._tracking_path.read_text())
            pid, folder = int(record["pid"]), str(record["source"])
            missed, oldest = record["missed"], record["oldest"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if pid == os.getpid() or not _alive(pid) or folder != str(source):
            return None
        return schedule.Tracking(
            str(missed) if missed is not None else None,
            float(oldest) if oldest is not None else None,
            None,
        )

    def _tracker_of(self, source: Path) -> Tracker | None:
        tracker = self._tracker
        return tracker if tracker is not None and tracker.root == source else None

    def _record_tracking(self, state: RelationshipState) -> None:
        """What the tracker says now, for a status asked by another process (no fsync:
        after a machine crash the record means nothing, its process being gone)."""
        tracking = self._tracking(state)
        record = {
            "pid": os.getpid(),
            "source": str(self._folder(self._sides(state)[0])),
            "missed": tracking.missed if tracking else "changes are not tracked",
            "oldest": tracking.oldest if tracking else None,
        }
        with contextlib.suppress(OSError):
            files.write_atomically(
                self._tracking_path, json.dumps(record), mode=0o600, durable=False
            )

    # -- operations --------------------------------------------------------------------

    async def transfer_now(
        self, *, timeout: float, progress: Progress | None = None
    ) -> OperationResult:
        deadline = Deadline(timeout)
        # The copy itself is local, but the source must answer over NFS: a source cut off
        # from the network replicates nothing, as with SnapMirror. Checked before taking
        # the lock, so a dead source never keeps a break waiting.
        await self._require_reachable(self._sides(self._load())[0], deadline)
        async with self._locked(deadline):
            state = self._load()
            if state.mirror_state == MirrorState.BROKEN:
                raise PreconditionError(
                    f"volume {self.volume.name}: replication is broken; resync it first"
                )
            await self._apply_access(state, deadline)
            state, transfer = await self._transfer(state, deadline, progress)
            return self._result("transfer", state, True, transfer=transfer)

    async def break_(
        self, *, force: bool = False, timeout: float, progress: Progress | None = None
    ) -> OperationResult:
        deadline = Deadline(timeout)
        async with self._locked(deadline, force=force):
            state = self._load()
            if state.mirror_state == MirrorState.UNINITIALIZED:
                raise PreconditionError(
                    f"volume {self.volume.name}: cannot break an uninitialized relationship"
                )
            changed = state.mirror_state != MirrorState.BROKEN
            if changed:
                state = replace(
                    state,
                    mirror_state=MirrorState.BROKEN.value,
                    broken_from_reversed=state.reversed,
                ).noted("break", force=force)
                state.save(self._state_path)
            _say(progress, f"making {self._status(state).destination} writable")
            await self._apply_access(state, deadline)
            return self._result("break", state, changed)

    async def quiesce_source(self, *, timeout: float) -> OperationResult:
        """The source's export becomes read-only (confirmed over NFS) and stays so, also
        across a break, until a resync makes a source of it again."""
        deadline = Deadline(timeout)
        async with self._locked(deadline):
            state = self._load()
            changed = not state.quiesced
            if changed:
                state = replace(state, quiesced=True).noted("quiesce")
                state.save(self._state_path)
            await self._apply_access(state, deadline, confirm_source=True)
            return self._result("quiesce", state, changed)

    async def fence(
        self, replica: str, *, timeout: float, before_change: BeforeFence | None = None
    ) -> FenceResult:
        """The replica's export becomes read-only (``Access_Type = RO``, confirmed over
        NFS) and stays so through the engine's own changes of direction, until
        ``unfence``: the fence is recorded in the relationship's state first."""
        deadline = Deadline(timeout)
        index = self._index(replica)
        export = self._export(index)
        if export is None:
            raise ProviderError(
                f"volume {self.volume.name}: {replica} has no Ganesha export in the"
                " configuration, so it cannot be fenced at the storage",
                code="unsupported",
            )
        async with self._locked(deadline):
            state = self._load()
            recorded = state.fenced.get(replica)
            if recorded is None:
                previous = ganesha.export_access(export.config, self._folder(index)) or "unknown"
                if before_change is not None:
                    await before_change({"access": previous})
                fenced = {**state.fenced, replica: previous}
                state = replace(state, fenced=fenced).noted("fence", replica=replica)
                state.save(self._state_path)
            await self._apply_access(state, deadline)
        # Confirmed outside the lock, and not waited for when the replica does not answer
        # at all (its zone is down: the usual case right after a failover): the fence is
        # in its export's config already, the next try confirms it, and meanwhile the
        # engine's other operations (a failback's, a transfer) need not wait.
        await self._confirm_access(index, True, deadline, unanswered_ends=True)
        return FenceResult(
            replica,
            changed=recorded is None,
            saved={"access": recorded or state.fenced[replica]},
            detail=f"the export of {replica} is read-only (Access_Type = RO)",
        )

    async def unfence(self, replica: str, saved: Saved, *, timeout: float) -> OperationResult:
        """The fence is dropped and the replica's export gets the access its side of the
        relationship gives it now: writable as the source or a broken destination,
        read-only as a mirrored destination (the access in ``saved`` was that of the side
        it was on when fenced, which a failback has since changed)."""
        deadline = Deadline(timeout)
        index = self._index(replica)
        async with self._locked(deadline):
            state = self._load()
            changed = replica in state.fenced
            if changed:
                fenced = {name: was for name, was in state.fenced.items() if name != replica}
                state = replace(state, fenced=fenced).noted("unfence", replica=replica)
                state.save(self._state_path)
            await self._apply_access(state, deadline)
            if changed:
                await self._confirm_access(index, self._read_only(state, index), deadline)
            return self._result("unfence", state, changed)

    def _index(self, replica: str) -> int:
        names = [r.name for r in self.volume.replicas]
        if replica not in names:
            raise ProviderError(
                f"volume {self.volume.name} has no replica {replica} (it has {', '.join(names)})",
                code="config",
            )
        return names.index(replica)

    async def resync(self, *, timeout: float, progress: Progress | None = None) -> OperationResult:
        return await self._resync(reverse=False, timeout=timeout, progress=progress)

    async def reverse_resync(
        self, *, timeout: float, progress: Progress | None = None
    ) -> OperationResult:
        return await self._resync(reverse=True, timeout=timeout, progress=progress)

    async def _resync(
        self, *, reverse: bool, timeout: float, progress: Progress | None
    ) -> OperationResult:
        deadline = Deadline(timeout)
        operation = "reverse resync" if reverse else "resync"
        async with self._locked(deadline):
            state = self._load()
            if state.mirror_state == MirrorState.MIRRORED:
                done = (
                    state.reversed != state.broken_from_reversed
                    if reverse
                    else state.broken_from_reversed in (None, state.reversed)
                )
                if done:
                    return self._result(operation, state, False)
            if state.mirror_state != MirrorState.BROKEN:
                raise PreconditionError(
                    f"volume {self.volume.name}: {operation} needs a broken relationship, "
                    f"it is {state.mirror_state}"
                )
            new_source = self._sides(state)[1 if reverse else 0]
            await self._require_reachable(new_source, deadline)
            divergence = self._divergence(state)
            overwritten = divergence.source_only if reverse else divergence.destination_only
            if reverse:
                state = replace(state, reversed=not state.reversed)
            state = replace(
                state, mirror_state=MirrorState.MIRRORED.value, last_transfer=None, quiesced=False
            )
            _say(progress, f"{operation}: {self._status(state).destination} becomes read-only")
            await self._apply_access(state, deadline)
            state = state.noted(operation, overwritten=len(overwritten))
            state.save(self._state_path)
            state, transfer = await self._transfer(state, deadline, progress, full=True)
            return self._result(operation, state, True, overwritten=overwritten, transfer=transfer)

    async def serve(self, stop: asyncio.Event, progress: Progress | None = None) -> None:
        """Transfer on the schedule until ``stop`` is set: the engine's own scheduler.

        While the relationship is not broken, a tracker watches the current source. When
        a transfer is due is ``schedule.next_transfer``'s answer; a failed one is retried
        after the interval or RETRY_AFTER (continuous: CONTINUOUS_RETRY), whichever is
        shorter. A transfer waits while another operation asks for the lock.
        """
        woken = asyncio.Event()
        self._on_change = woken
        self._serving = True
        retry_at = 0.0
        try:
            while not stop.is_set():
                woken.clear()
                state = self._load()
                await self._keep_tracker(state)
                self._record_tracking(state)
                now = time.time()
                due = max(schedule.next_transfer(now, self.settings, self._facts(state)), retry_at)
                if state.mirror_state != MirrorState.BROKEN and due <= now:
                    if not self._lock_wanted():
                        try:
                            await self.transfer_now(timeout=self._timeout(), progress=progress)
                        except ProviderError:
                            # Not at once again: a retry loop would starve a break of the lock.
                            retry_at = time.time() + self._retry_after()
                        continue
                    due = now + self.poll_interval
                await _until(stop, woken, min(max(due - now, 0.01), RECHECK))
        finally:
            self._serving = False
            self._on_change = None
            async with self._tracker_lock:
                await self._stop_tracking()
            with contextlib.suppress(OSError):
                self._tracking_path.unlink(missing_ok=True)

    def _timeout(self) -> float:
        interval = self.settings.schedule
        return (
            max(interval.total_seconds(), SCHEDULED_TIMEOUT)
            if isinstance(interval, timedelta)
            else SCHEDULED_TIMEOUT
        )

    def _retry_after(self) -> float:
        interval = self.settings.schedule
        if isinstance(interval, timedelta):
            return min(interval.total_seconds(), RETRY_AFTER)
        return CONTINUOUS_RETRY

    async def _keep_tracker(self, state: RelationshipState) -> None:
        """A running tracker on the current source while the relationship is not broken;
        none otherwise. One that failed to start is tried again before the next walk
        (``_track_before_walk``), not here."""
        source = self._folder(self._sides(state)[0])
        wanted = state.mirror_state != MirrorState.BROKEN
        async with self._tracker_lock:
            tracker = self._tracker
            if tracker is not None and (
                not wanted or tracker.root != source or not tracker.running
            ):
                await self._stop_tracking()
                tracker = None
            if self._untracked_root != source:
                self._untracked, self._untracked_root = None, None
            if tracker is None and wanted and self._untracked is None:
                await self._start_tracker(source)

    async def _track_before_walk(self, source: Path) -> None:
        """A serving engine without a tracker (one that failed to start, or none yet after
        a resync) starts one before a walk, which makes it trusted at once: at most once
        per walk, which costs as much anyway."""
        async with self._tracker_lock:
            if self._serving and self._tracker is None:
                await self._start_tracker(source)

    async def _start_tracker(self, source: Path) -> None:
        woken, loop = self._on_change, asyncio.get_running_loop()

        def changed() -> None:
            if woken is not None:
                loop.call_soon_threadsafe(woken.set)

        tracker = Tracker(source, on_change=changed)
        try:
            await asyncio.to_thread(tracker.start)
        except ProviderError as exc:
            log.warning("volume %s: %s; every transfer walks the whole tree", self.volume.name, exc)
            self._untracked, self._untracked_root = str(exc), source
            return
        self._tracker, self._untracked, self._untracked_root = tracker, None, None

    async def _stop_tracking(self) -> None:
        tracker, self._tracker = self._tracker, None
        if tracker is not None:
            await asyncio.to_thread(tracker.close)

    async def divergence(self, *, timeout: float) -> Divergence:
        deadline = Deadline(timeout)
        async with self._locked(deadline):
            return await asyncio.wait_for(
                asyncio.to_thread(self._divergence, self._load()), deadline.left()
            )

    def _divergence(self, state: RelationshipState) -> Divergence:
        last = state.last_transfer
        if last is None:
            raise PreconditionError(
                f"volume {self.volume.name}: no completed transfer, so no common point"
            )
        source, destination = self._sides(state)
        manifest = self._manifest.entries()
        since = int(last.started * 1e9) - CTIME_MARGIN_NS
        return Divergence(
            since=datetime.fromtimestamp(last.started, UTC),
            source_only=tuple(changed_since(self._folder(source), manifest, since)),
            destination_only=tuple(changed_since(self._folder(destination), manifest, None)),
        )

    # -- the data path -----------------------------------------------------------------

    async def _transfer(
        self,
        state: RelationshipState,
        deadline: Deadline,
        progress: Progress | None,
        full: bool = False,
    ) -> tuple[RelationshipState, Transfer]:
        """One transfer from source to destination, then the manifest; crash-safe.

        It sends the tracked changes, or walks the whole tree for the reason
        ``schedule.walk_reason`` gives (``full``: always).
        """
        source, destination = self._sides(state)
        walk = (
            "a resync walks the whole tree"
            if full
            else schedule.walk_reason(time.time(), self.settings, self._facts(state))
        )
        if walk is not None:
            await self._track_before_walk(self._folder(source))
        state = replace(state, transfer_started=time.time(), transfer_pid=os.getpid())
        state.save(self._state_path)
        names = self._status(state)
        _say(
            progress,
            f"transferring {names.source} -> {names.destination}"
            + (f" (whole tree: {walk})" if walk else ""),
        )

        def running(pid: int | None) -> None:
            # While rsync runs, its pid marks the transfer: a forced break stops it, and a
            # crash of this process leaves it visible until it ends. Then the manifest is
            # this process's work again.
            replace(state, transfer_pid=pid or os.getpid()).save(self._state_path)

        self._transferring = True
        try:
            done = await transfer(
                self._folder(source),
                self._folder(destination),
                self._manifest,
                deadline,
                tracker=self._tracker_of(self._folder(source)),
                walk=walk,
                progress=progress,
                rsync_pid=running,
            )
        except BaseException as exc:
            # Still under the lock: nothing else has written the state meanwhile.
            at = datetime.fromtimestamp(state.transfer_started or 0, UTC).isoformat()
            why = "was interrupted" if isinstance(exc, asyncio.CancelledError) else f"failed: {exc}"
            replace(
                state,
                transfer_started=None,
                transfer_pid=None,
                unhealthy=f"transfer started {at} {why}; the next transfer completes it",
            ).save(self._state_path)
            raise
        finally:
            self._transferring = False
        if done.untracked is not None:  # its new watches failed: it is closed
            self._tracker = None
            self._untracked, self._untracked_root = done.untracked, self._folder(source)
        walked = done.walked is not None
        record = Transfer(done.started, done.ended, done.sent, done.files, walked)
        state = replace(
            state,
            mirror_state=MirrorState.MIRRORED.value,
            transfer_started=None,
            transfer_pid=None,
            unhealthy=None,
            last_transfer=record,
            last_full_started=done.started if walked else state.last_full_started,
        )
        if walked:  # the history keeps walks; sent changes are only the last transfer
            state = state.noted("transfer", bytes=done.sent, files=done.files, why=done.walked)
        state.save(self._state_path)
        _say(progress, f"transferred {done.files} changes, {done.sent} bytes", 1.0)
        return state, record

    async def _require_reachable(self, index: int, deadline: Deadline) -> None:
        replica = self.volume.replicas[index]
        async with Prober(timeout=min(REACHABLE_TIMEOUT, deadline.left()), keep=False) as prober:
            result = await prober.probe(replica.export)
        if not result.up:
            raise ProviderError(
                f"{replica.name} ({replica.export}) does not answer over NFS "
                f"({result.summary()}); no transfer started",
                code="source-unreachable",
            )

    async def _apply_access(
        self, state: RelationshipState, deadline: Deadline, *, confirm_source: bool = False
    ) -> None:
        """The destination is read-only until a break, the source writable unless
        quiesced; a fenced replica is read-only whatever its side.

        The destination's access is always confirmed over NFS, unless it is fenced; the
        source's only when it had to change (or ``confirm_source``), since after an outage
        the source may not answer at all. A fenced replica's is confirmed by ``fence``:
        the fence holds in the config even while the replica does not answer.
        """
        source, destination = self._sides(state)
        for index in (source, destination):
            export = self._export(index)
            if export is None:
                continue
            read_only = self._read_only(state, index)
            changed = ganesha.set_access(export.config, self._folder(index), read_only=read_only)
            if changed:
                ganesha.reload(export.pidfile)
            fenced = self.volume.replicas[index].name in state.fenced
            if not fenced and (changed or index == destination or confirm_source):
                await self._confirm_access(index, read_only, deadline)

    def _read_only(self, state: RelationshipState, index: int) -> bool:
        if self.volume.replicas[index].name in state.fenced:
            return True
        if index == self._sides(state)[0]:
            return state.quiesced
        return state.mirror_state != MirrorState.BROKEN

    async def _confirm_access(
        self, index: int, read_only: bool, deadline: Deadline, *, unanswered_ends: bool = False
    ) -> None:
        """Wait until the export really refuses or takes writes over NFS (Ganesha reloads
        exports asynchronously after SIGHUP). ``unanswered_ends``: a replica that does not
        answer at all ends the wait at once (ProviderTimeout) instead of at the deadline."""
        replica = self.volume.replicas[index]
        pacer = Pacer.every(self.poll_interval, deadline)
        async with Prober(timeout=min(2.0, deadline.left()), keep=False) as prober:
            while True:
                result = await prober.probe(replica.export, check_write=True)
                if result.up and result.writable is not None and result.writable != read_only:
                    return
                if unanswered_ends and not result.up:
                    raise ProviderTimeout(
                        f"{replica.name} ({replica.export}) does not answer: {result.summary()};"
                        " its export is read-only in its configuration, to be confirmed once"
                        " it answers"
                    )
                if not await pacer.pause_whole():
                    wanted = "read-only" if read_only else "writable"
                    raise ProviderTimeout(
                        f"{replica.name} ({replica.export}) did not become {wanted}: "
                        f"{result.summary()}"
                    )

    def _result(
        self,
        operation: str,
        state: RelationshipState,
        changed: bool,
        *,
        overwritten: tuple[str, ...] = (),
        transfer: Transfer | None = None,
    ) -> OperationResult:
        return OperationResult(
            operation=operation,
            status=self._status(state),
            changed=changed,
            overwritten=overwritten,
            bytes_transferred=transfer.bytes if transfer else None,
        )

    @contextlib.asynccontextmanager
    async def _locked(self, deadline: Deadline, *, force: bool = False) -> AsyncIterator[None]:
        """One operation at a time per relationship, across processes, within the deadline.

        ``force`` (a forced break) does not wait for a running transfer: it stops it.
        """
        lock = open(self.state_dir / "lock", "w")  # noqa: SIM115 - held across awaits
        pacer = Pacer.every(self.poll_interval, deadline)
        waited = False
        try:
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    waited = True
                    self._want_lock()
                    if force:
                        _stop_transfer(self._state_path)
                    if not await pacer.pause_whole():
                        raise ProviderTimeout(
                            f"volume {self.volume.name}: another operation (a transfer?) is "
                            "still running"
                        ) from None
            if waited:
                self._unwant_lock()
            yield
        finally:
            lock.close()
            if waited:
                self._unwant_lock()

    def _want_lock(self) -> None:
        """Say that this process waits for the lock: the scheduler starts no transfer
        meanwhile (renewed at each try; it lapses after LOCK_WANTED_FOR)."""
        with contextlib.suppress(OSError):
            self._wanted_path.write_text(str(os.getpid()))

    def _unwant_lock(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            if int(self._wanted_path.read_text()) == os.getpid():
                self._wanted_path.unlink()

    def _lock_wanted(self) -> bool:
        try:
            pid = int(self._wanted_path.read_text())
            age = time.time() - self._wanted_path.stat().st_mtime
        except (OSError, ValueError):
            return False
        return age < LOCK_WANTED_FOR and _alive(pid)


def _stop_transfer(state_path: Path) -> None:
    """A forced break stops the transfer in flight (its rsync, never a process of ours)."""
    with contextlib.suppress(ProviderError):
        state = RelationshipState.load(state_path)
        pid = state.transfer_pid
        with contextlib.suppress(OSError):
            if pid and Path(f"/proc/{pid}/comm").read_text().strip() == "rsync":
                os.kill(pid, 15)


def _alive(pid: int | None) -> bool:
    """Whether a process runs (a zombie, killed but not yet reaped, does not)."""
    if pid is None:
        return False
    if pid == os.getpid():
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _say(progress: Progress | None, message: str, fraction: float | None = None) -> None:
    if progress is not None:
        progress(message, fraction)


async def _until(stop: asyncio.Event, woken: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds``, or less when ``stop`` or ``woken`` is set."""
    waiters = [asyncio.ensure_future(event.wait()) for event in (stop, woken)]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
