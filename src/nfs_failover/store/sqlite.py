"""The sqlite store: the whole ``Store`` contract in one sqlite file (WAL) on one host.

Each operation is one statement under the store's lock, so each is atomic by sqlite's own
transactions: the compare-and-swaps are an UPDATE or INSERT whose WHERE (or unique index)
is the comparison, and ``rowcount`` says whether it won. The watch is a poll of
``PRAGMA data_version`` every 0.1 s on a connection of its own: sqlite has no change
notification, and the poll is a cheap local read.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nfs_failover.desired import VolumeDesired
from nfs_failover.store.codec import desired_json, parse_desired
from nfs_failover.store.contract import REPORT_TTL, Event, Report, Store, StoreError, Workflow

log = logging.getLogger(__name__)
WATCH_POLL = 0.1  # seconds between two looks at data_version


_SCHEMA = """
CREATE TABLE IF NOT EXISTS desired (
    volume TEXT PRIMARY KEY, generation INTEGER NOT NULL, state TEXT NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS reports (
    agent TEXT NOT NULL, volume TEXT NOT NULL, replica TEXT NOT NULL, up INTEGER NOT NULL,
    detail TEXT NOT NULL, latency_s REAL NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (agent, volume, replica)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, volume TEXT NOT NULL,
    workflow INTEGER, kind TEXT NOT NULL, step TEXT NOT NULL, phase TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_volume ON events (volume, id);
CREATE TABLE IF NOT EXISTS workflows (
    id INTEGER PRIMARY KEY AUTOINCREMENT, volume TEXT NOT NULL, kind TEXT NOT NULL,
    status TEXT NOT NULL, step INTEGER NOT NULL, data TEXT NOT NULL, started REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS one_running_workflow ON workflows (volume)
    WHERE status = 'running';
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires REAL NOT NULL
);
"""


class SqliteStore(Store):
    """The store in one sqlite file (WAL), readable by root only."""

    def __init__(self, path: Path, *, timeout: float = 5.0) -> None:
        self.path = path
        self.timeout = timeout
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                os.fchmod(fd, 0o600)  # an existing store made wider by hand is narrowed
            finally:
                os.close(fd)
            self._db = sqlite3.connect(
                path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
            for side in ("-wal", "-shm"):  # sqlite makes them like the store, mostly
                with contextlib.suppress(FileNotFoundError):
                    os.chmod(f"{path}{side}", 0o600)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{path}: cannot open the store ({exc})") from exc

    def __str__(self) -> str:
        return f"sqlite://{self.path}"

    def close(self) -> None:
        self._db.close()

    def get_desired(self, volume: str) -> VolumeDesired | None:
        """The stored desired state of ``volume``; StoreError naming the volume and the row
        when the row is unreadable."""
        row = self._query("SELECT state FROM desired WHERE volume = ?", (volume,)).fetchone()
        return parse_desired(volume, row[0]) if row else None

    def all_desired(self) -> dict[str, VolumeDesired]:
        """Every readable desired state; an unreadable row is logged (naming the volume and
        the row) and left out, so the other volumes carry on."""
        return _readable(self._query("SELECT volume, state FROM desired", ()).fetchall())

    def set_desired(self, desired: VolumeDesired, *, expected_generation: int | None) -> bool:
        """Write ``desired`` if the stored generation is still ``expected_generation``
        (None: no state stored yet). Returns False, changing nothing, when it is not."""
        state = desired_json(desired)
        if expected_generation is None:
            sql = "INSERT OR IGNORE INTO desired VALUES (?, ?, ?, ?)"
            args: tuple[object, ...] = (desired.volume, desired.generation, state, time.time())
        else:
            sql = (
                "UPDATE desired SET generation = ?, state = ?, updated = ? "
                "WHERE volume = ? AND generation = ?"
            )
            args = (desired.generation, state, time.time(), desired.volume, expected_generation)
        return self._query(sql, args).rowcount == 1

    def watch_desired(self, stop: threading.Event) -> Iterator[dict[str, VolumeDesired]]:
        """A poll of ``PRAGMA data_version`` every 0.1 s, on a connection of its own (the
        version moves only for commits of other connections, this store's own included);
        the desired states are read again when it moved, and yielded when they changed."""
        shown: dict[str, VolumeDesired] | None = None
        seen: int | None = None
        db: sqlite3.Connection | None = None
        try:
            while not stop.is_set():
                try:
                    if db is None:
                        db = sqlite3.connect(self.path, timeout=self.timeout)
                    version = int(db.execute("PRAGMA data_version").fetchone()[0])
                    if version != seen:
                        rows = db.execute("SELECT volume, state FROM desired").fetchall()
                        seen, now = version, _readable(rows)
                        if now != shown:
                            shown = now
                            yield dict(now)
                except sqlite3.Error as exc:  # the next poll tries again
                    log.warning("%s: desired-state watch: %s", self.path, exc)
                    if db is not None:
                        db.close()
                    db, seen = None, None
                stop.wait(WATCH_POLL)
        finally:
            if db is not None:
                db.close()

    def put_report(self, report: Report) -> None:
        self._query(
            "INSERT OR REPLACE INTO reports VALUES (?, ?, ?, ?, ?, ?, ?)",
            tuple(asdict(report).values()),
        )

    def reports(self, volume: str | None = None, *, now: float | None = None) -> list[Report]:
        oldest = (time.time() if now is None else now) - REPORT_TTL
        rows = self._query(
            "SELECT * FROM reports WHERE (? IS NULL OR volume = ?) AND at >= ?",
            (volume, volume, oldest),
        ).fetchall()
        return [Report(a, v, r, bool(u), d, lat, at) for a, v, r, u, d, lat, at in rows]

    # -- the journal ---------------------------------------------------------------------

    def append(self, event: Event) -> int:
        """Add an event at the end of the journal; returns its id."""
        cursor = self._query(
            "INSERT INTO events (at, volume, workflow, kind, step, phase, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                event.at or time.time(),
                event.volume,
                event.workflow,
                event.kind,
                event.step,
                event.phase,
                json.dumps(event.detail, default=str),
            ),
        )
        return int(cursor.lastrowid or 0)

    def events(
        self, volume: str | None = None, *, after: int = 0, limit: int = 10_000
    ) -> list[Event]:
        """Journal entries after id ``after``, oldest first."""
        rows = self._query(
            "SELECT id, at, volume, workflow, kind, step, phase, detail FROM events "
            "WHERE id > ? AND (? IS NULL OR volume = ?) ORDER BY id LIMIT ?",
            (after, volume, volume, limit),
        ).fetchall()
        return [_event(row) for row in rows]

    def recent_events(self, volume: str | None = None, *, limit: int = 200) -> list[Event]:
        """The newest ``limit`` entries, oldest first."""
        rows = self._query(
            "SELECT id, at, volume, workflow, kind, step, phase, detail FROM events "
            "WHERE (? IS NULL OR volume = ?) ORDER BY id DESC LIMIT ?",
            (volume, volume, limit),
        ).fetchall()
        return [_event(row) for row in reversed(rows)]

    def last_event(
        self, volumes: Sequence[str], kinds: Sequence[str], *, with_key: str | None = None
    ) -> Event | None:
        """The newest entry of one of ``kinds`` for one of ``volumes`` (whose detail has
        ``with_key``, if given)."""
        marks = ",".join("?" * len(volumes)), ",".join("?" * len(kinds))
        row = self._query(
            "SELECT id, at, volume, workflow, kind, step, phase, detail FROM events "  # noqa: S608 - placeholders only
            f"WHERE volume IN ({marks[0]}) AND kind IN ({marks[1]}) "
            "AND (? IS NULL OR json_extract(detail, '$.' || ?) IS NOT NULL) "
            "ORDER BY id DESC LIMIT 1",
            (*volumes, *kinds, with_key, with_key),
        ).fetchone()
        return _event(row) if row else None

    def last_events(self, volumes: Sequence[str], kinds: Sequence[str]) -> dict[str, Event]:
        marks = ",".join("?" * len(volumes)), ",".join("?" * len(kinds))
        rows = self._query(
            "SELECT id, at, volume, workflow, kind, step, phase, detail FROM events "  # noqa: S608 - placeholders only
            "WHERE id IN (SELECT max(id) FROM events "
            f"WHERE volume IN ({marks[0]}) AND kind IN ({marks[1]}) GROUP BY volume)",
            (*volumes, *kinds),
        ).fetchall()
        return {event.volume: event for event in map(_event, rows)}

    def count_events(self, volume: str, step: str, phase: str) -> int:
        row = self._query(
            "SELECT count(*) FROM events WHERE volume = ? AND step = ? AND phase = ?",
            (volume, step, phase),
        ).fetchone()
        return int(row[0]) if row else 0

    # -- workflows -------------------------------------------------------------------------

    def start_workflow(self, volume: str, kind: str, data: dict[str, object]) -> Workflow:
        """Record a new running workflow; StoreError if the volume already runs one (the
        unique index on running workflows is the comparison)."""
        now = time.time()
        try:
            cursor = self._query(
                "INSERT INTO workflows (volume, kind, status, step, data, started, updated) "
                "VALUES (?, ?, 'running', 0, ?, ?, ?)",
                (volume, kind, json.dumps(data, default=str), now, now),
            )
        except StoreError as exc:
            if isinstance(exc.__cause__, sqlite3.IntegrityError):
                raise StoreError(
                    f"{self.path}: volume {volume} already runs a workflow ({exc.__cause__})"
                ) from exc.__cause__
            raise
        return Workflow(int(cursor.lastrowid or 0), volume, kind, "running", 0, data, now, now)

    def running_workflow(self, volume: str) -> Workflow | None:
        row = self._query(
            "SELECT id, volume, kind, status, step, data, started, updated FROM workflows "
            "WHERE volume = ? AND status = 'running'",
            (volume,),
        ).fetchone()
        return _workflow(row) if row else None

    def running_workflows(self) -> dict[str, Workflow]:
        rows = self._query(
            "SELECT id, volume, kind, status, step, data, started, updated FROM workflows "
            "WHERE status = 'running'",
            (),
        ).fetchall()
        return {workflow.volume: workflow for workflow in map(_workflow, rows)}

    def last_workflow(self, volume: str) -> Workflow | None:
        row = self._query(
            "SELECT id, volume, kind, status, step, data, started, updated FROM workflows "
            "WHERE volume = ? ORDER BY id DESC LIMIT 1",
            (volume,),
        ).fetchone()
        return _workflow(row) if row else None

    def advance_workflow(self, workflow: int, step: int, data: dict[str, object]) -> None:
        """Record that the steps before ``step`` are done, with the workflow's data."""
        self._query(
            "UPDATE workflows SET step = ?, data = ?, updated = ? WHERE id = ?",
            (step, json.dumps(data, default=str), time.time(), workflow),
        )

    def finish_workflow(self, workflow: int, status: str) -> None:
        self._query(
            "UPDATE workflows SET status = ?, updated = ? WHERE id = ? AND status = 'running'",
            (status, time.time(), workflow),
        )

    # -- the leader lease --------------------------------------------------------------

    def acquire_lease(
        self,
        name: str,
        holder: str,
        ttl: float,
        *,
        timeout: float | None = None,
        now: float | None = None,
    ) -> bool:
        """Take or renew the lease ``name`` for ``ttl`` seconds; False while another holder's
        lease has not expired. ``now`` (the wall clock by default) is when the lease's time
        starts: taken before the statement runs, so never later than the call was sent.
        ``timeout`` bounds both the wait for this store's lock and sqlite's busy wait."""
        at = time.time() if now is None else now
        cursor = self._query(
            "INSERT INTO leases VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
            "holder = excluded.holder, expires = excluded.expires "
            "WHERE leases.holder = excluded.holder OR leases.expires < ?",
            (name, holder, at + ttl, at),
            timeout=timeout,
        )
        return cursor.rowcount == 1

    def release_lease(self, name: str, holder: str) -> None:
        self._query("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))

    def lease_holder(self, name: str, *, now: float | None = None) -> str | None:
        at = time.time() if now is None else now
        row = self._query(
            "SELECT holder FROM leases WHERE name = ? AND expires >= ?", (name, at)
        ).fetchone()
        return str(row[0]) if row else None

    def _query(
        self, sql: str, args: tuple[object, ...], *, timeout: float | None = None
    ) -> _Result:
        """One statement and all its rows, under the store's lock: the controller, the
        agent and the API call the store from worker threads, and one sqlite connection
        must not be used by two at once. ``timeout``, when shorter than the store's, bounds
        the wait for the lock and sqlite's wait for a locked database."""
        if timeout is None or timeout >= self.timeout:
            with self._lock:
                return self._execute(sql, args)
        if not self._lock.acquire(timeout=max(timeout, 0.0)):
            raise StoreError(f"{self.path}: busy for {timeout:g}s (another call holds it)")
        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            try:
                return self._execute(sql, args)
            finally:
                self._db.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc
        finally:
            self._lock.release()

    def _execute(self, sql: str, args: tuple[object, ...]) -> _Result:
        try:
            cursor = self._db.execute(sql, args)
            return _Result(cursor.fetchall(), cursor.rowcount, cursor.lastrowid)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc


@dataclass(frozen=True)
class _Result:
    """What a statement gave, read whole while the lock was held."""

    rows: list[tuple[Any, ...]]
    rowcount: int
    lastrowid: int | None

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows


def _event(row: tuple[Any, ...]) -> Event:
    eid, at, volume, workflow, kind, step, phase, detail = row
    return Event(volume, kind, json.loads(detail), workflow, step, phase, at, eid)


def _workflow(row: tuple[Any, ...]) -> Workflow:
    wid, volume, kind, status, step, data, started, updated = row
    return Workflow(wid, volume, kind, status, step, json.loads(data), started, updated)


def _readable(rows: list[tuple[Any, ...]]) -> dict[str, VolumeDesired]:
    found = {}
    for volume, state in rows:
        try:
            found[str(volume)] = parse_desired(str(volume), state)
        except StoreError as exc:
            log.error("%s", exc)
    return found
