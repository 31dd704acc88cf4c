"""The embedded replication engine: two exported folders kept in step with rsync.

It keeps what SnapMirror keeps: the relationship's state and direction (a JSON file,
rewritten atomically), and a manifest of the destination as the last transfer left it
(see ``manifest``), which lag and divergence are computed from.

Consistency: a transfer copies a live tree file by file; it is not a snapshot. The
destination holds every change made on the source before the transfer started, and
possibly some made during it. So the last common point is the transfer's *start*, and
divergence counts every source file changed since then (a few false positives around a
transfer, never a missed change). rsync's quick check compares size and mtime, as plain
``rsync -a`` does: a rewrite that keeps both is not copied.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from nfs_failover import files, ganesha
from nfs_failover.config import GaneshaExport, LocalReplication, Volume
from nfs_failover.errors import PreconditionError, ProviderError, ProviderTimeout
from nfs_failover.pacing import Deadline, Pacer
from nfs_failover.probe import Prober
from nfs_failover.replication.base import (
    Divergence,
    MirrorState,
    OperationResult,
    Progress,
    Provider,
    RelationshipStatus,
    ReplicationStatus,
)
from nfs_failover.replication.manifest import Manifest, changed_since

DEFAULT_STATE_ROOT = Path("/var/lib/nfs-failover/local")
RSYNC = ("rsync", "-a", "--delete", "--inplace", "--numeric-ids", "--stats", "--out-format=%i %n")
# File timestamps come from a coarse clock that may lag time.time() by a tick (<= 10 ms).
CTIME_MARGIN_NS = 20_000_000
HISTORY = 50
SCHEDULED_TIMEOUT = 6 * 3600.0  # a scheduled transfer of local folders: rsync cannot hang
PROGRESS_EVERY = 1.0  # seconds between progress reports of a running transfer


REACHABLE_TIMEOUT = 2.0  # seconds for the source's NFS check before a transfer
RETRY_AFTER = 5.0  # seconds, at most, before a failed scheduled transfer is tried again


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
    last_transfer: Transfer | None = None
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

    async def close(self) -> None:
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
        if state.transfer_started is not None and not _alive(state.transfer_pid):
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
            lag=timedelta(seconds=time.time() - last.started) if last else None,
            lag_source="manifest" if last else None,
            raw={
                "mirror_state": state.mirror_state,
                "direction": "reverse" if state.reversed else "forward",
            },
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

        A transfer is due ``schedule`` after the previous one started; a failed one is
        retried after ``schedule`` or RETRY_AFTER, whichever is shorter. Only a mirrored
        (or new) relationship transfers.
        """
        interval = self.settings.schedule.total_seconds()
        retry_at = 0.0
        while not stop.is_set():
            state = self._load()
            last = state.last_transfer
            due = (last.started + interval) if last and state.unhealthy is None else 0.0
            due = max(due, retry_at)
            if state.mirror_state != MirrorState.BROKEN and time.time() >= due:
                try:
                    await self.transfer_now(
                        timeout=max(interval, SCHEDULED_TIMEOUT), progress=progress
                    )
                except ProviderError:
                    # Not at once again: a retry loop would starve a break of the lock.
                    retry_at = time.time() + min(interval, RETRY_AFTER)
                continue
            with contextlib.suppress(TimeoutError):
                wait = min(max(due - time.time(), 0.05), interval)
                await asyncio.wait_for(stop.wait(), wait)

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
        """One rsync from source to destination, then the manifest; crash-safe."""
        source, destination = self._sides(state)
        full = full or state.last_transfer is None or state.unhealthy is not None
        started = time.time()
        state = replace(state, transfer_started=started, transfer_pid=os.getpid())
        state.save(self._state_path)
        _say(
            progress,
            f"transferring {self._status(state).source} -> "
            f"{self._status(state).destination}{' (full)' if full else ''}",
        )

        def running(pid: int) -> None:
            # While rsync runs, its pid marks the transfer: a forced break stops it, and a
            # crash of this process leaves it visible until it ends.
            replace(state, transfer_pid=pid).save(self._state_path)

        changed, deleted, sent = await _rsync(
            self._folder(source), self._folder(destination), deadline, progress, running
        )
        state.save(self._state_path)  # the manifest is this process's work again
        dest_root = self._folder(destination)
        if full:
            await asyncio.to_thread(self._manifest.rebuild, dest_root)
        else:
            await asyncio.to_thread(self._manifest.update, dest_root, changed, deleted)
        transfer = Transfer(started, time.time(), sent, len(changed) + len(deleted), full)
        state = replace(
            state,
            mirror_state=MirrorState.MIRRORED.value,
            transfer_started=None,
            transfer_pid=None,
            unhealthy=None,
            last_transfer=transfer,
        ).noted("transfer", bytes=sent, files=transfer.files_changed, full=full)
        state.save(self._state_path)
        _say(progress, f"transferred {transfer.files_changed} changes, {sent} bytes", 1.0)
        return state, transfer

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
        quiesced.

        The destination's access is always confirmed over NFS; the source's only when it
        had to change (or ``confirm_source``), since after an outage the source may not
        answer at all.
        """
        source, destination = self._sides(state)
        protected = state.mirror_state != MirrorState.BROKEN
        for index, read_only in ((source, state.quiesced), (destination, protected)):
            export = self._export(index)
            if export is None:
                continue
            changed = ganesha.set_access(export.config, self._folder(index), read_only=read_only)
            if changed:
                ganesha.reload(export.pidfile)
            if changed or index == destination or confirm_source:
                await self._confirm_access(index, read_only, deadline)

    async def _confirm_access(self, index: int, read_only: bool, deadline: Deadline) -> None:
        """Wait until the export really refuses or takes writes over NFS (Ganesha reloads
        exports asynchronously after SIGHUP)."""
        replica = self.volume.replicas[index]
        pacer = Pacer.every(self.poll_interval, deadline)
        async with Prober(timeout=min(2.0, deadline.left()), keep=False) as prober:
            while True:
                result = await prober.probe(replica.export, check_write=True)
                if result.up and result.writable is not None and result.writable != read_only:
                    return
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
        try:
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if force:
                        _stop_transfer(self._state_path)
                    if not await pacer.pause_whole():
                        raise ProviderTimeout(
                            f"volume {self.volume.name}: another operation (a transfer?) is "
                            "still running"
                        ) from None
            yield
        finally:
            lock.close()


async def _rsync(
    source: Path,
    destination: Path,
    deadline: Deadline,
    progress: Progress | None,
    started: Callable[[int], None],
) -> tuple[list[str], list[str], int]:
    """Run rsync within the deadline; returns files written, paths deleted, bytes sent.

    Its itemized output is read as it comes, so a long transfer reports progress.
    """
    destination.mkdir(parents=True, exist_ok=True)
    proc = await asyncio.create_subprocess_exec(
        *RSYNC,
        f"{source}/",
        f"{destination}/",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        limit=1 << 20,
    )
    started(proc.pid)
    try:
        out, err = await asyncio.wait_for(_collect(proc, progress), deadline.left())
    except (TimeoutError, asyncio.CancelledError):
        proc.kill()
        await proc.wait()
        raise ProviderTimeout(
            "rsync did not finish within the deadline; the transfer is incomplete and the "
            "next one completes it"
        ) from None
    if proc.returncode != 0:
        reason = err.decode(errors="replace").strip().splitlines()
        raise ProviderError(
            f"rsync failed with exit status {proc.returncode}",
            code=f"rsync-{proc.returncode}",
            provider_message=reason[-1] if reason else "",
        )
    return _parse_rsync(out.decode(errors="surrogateescape"))


async def _collect(
    proc: asyncio.subprocess.Process, progress: Progress | None
) -> tuple[bytes, bytes]:
    assert proc.stdout is not None and proc.stderr is not None
    errors = asyncio.ensure_future(proc.stderr.read())
    lines: list[bytes] = []
    reported = time.monotonic()
    async for line in proc.stdout:
        lines.append(line)
        if progress is not None and time.monotonic() - reported >= PROGRESS_EVERY:
            reported = time.monotonic()
            progress(f"transferring: {len(lines)} files so far", None)
    await proc.wait()
    return b"".join(lines), await errors


_STAT_SENT = re.compile(r"^Total transferred file size: ([\d,]+) bytes", re.MULTILINE)


def _parse_rsync(output: str) -> tuple[list[str], list[str], int]:
    changed: list[str] = []
    deleted: list[str] = []
    for line in output.splitlines():
        code, _, name = line.partition(" ")
        if code == "*deleting":
            deleted.append(_unescape(name.strip()))
        elif len(code) == 11 and code[1] in "fL":
            changed.append(_unescape(name))
    match = _STAT_SENT.search(output)
    return changed, deleted, int(match.group(1).replace(",", "")) if match else 0


def _unescape(name: str) -> str:
    """rsync prints unprintable bytes of names as \\#ooo."""
    return re.sub(r"\\#([0-7]{3})", lambda m: chr(int(m.group(1), 8)), name)


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
