"""The store: the desired state, the vantage points' reports, the journal of workflow
steps and the leader lease, shared by the controller and the agents.

The contract (kept by every implementation; sqlite now, etcd later):
- ``set_desired`` is a compare-and-swap on the volume's generation, so two writers never
  silently overwrite each other; readers always see a whole state, never half of one.
- The journal is append-only; each workflow step is recorded before and after it runs,
  so a controller killed at any point finds where it was.
- At most one running workflow per volume; ``acquire_lease`` is a compare-and-swap with
  an expiry, so two controllers on one store never both act.
- Every call finishes within the store's ``timeout`` or raises ``StoreError``: a store
  that is briefly unavailable costs a caller one failed call, never a hang.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nfs_failover.config import StoreUrl
from nfs_failover.desired import VolumeDesired
from nfs_failover.errors import NfsFailoverError

log = logging.getLogger(__name__)


class StoreError(NfsFailoverError):
    """The store could not be read or written within its deadline."""


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
    status: str  # running, done, failed
    step: int  # the index of the next step to run
    data: dict[str, object]
    started: float
    updated: float


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


class SqliteStore:
    """The store in one sqlite file (WAL), readable by root only."""

    def __init__(self, path: Path, *, timeout: float = 5.0) -> None:
        self.path = path
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

    def close(self) -> None:
        self._db.close()

    def get_desired(self, volume: str) -> VolumeDesired | None:
        """The stored desired state of ``volume``; StoreError naming the volume and the row
        when the row is unreadable."""
        row = self._query("SELECT state FROM desired WHERE volume = ?", (volume,)).fetchone()
        return _desired(volume, row[0]) if row else None

    def all_desired(self) -> dict[str, VolumeDesired]:
        """Every readable desired state; an unreadable row is logged (naming the volume and
        the row) and left out, so the other volumes carry on."""
        found = {}
        for volume, state in self._query("SELECT volume, state FROM desired", ()).fetchall():
            try:
                found[volume] = _desired(volume, state)
            except StoreError as exc:
                log.error("%s", exc)
        return found

    def set_desired(self, desired: VolumeDesired, *, expected_generation: int | None) -> bool:
        """Write ``desired`` if the stored generation is still ``expected_generation``
        (None: no state stored yet). Returns False, changing nothing, when it is not."""
        state = json.dumps(asdict(desired))
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

    def put_report(self, report: Report) -> None:
        self._query(
            "INSERT OR REPLACE INTO reports VALUES (?, ?, ?, ?, ?, ?, ?)",
            tuple(asdict(report).values()),
        )

    def reports(self, volume: str | None = None) -> list[Report]:
        rows = self._query(
            "SELECT * FROM reports WHERE ? IS NULL OR volume = ?", (volume, volume)
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

    def count_events(self, volume: str, step: str, phase: str) -> int:
        row = self._query(
            "SELECT count(*) FROM events WHERE volume = ? AND step = ? AND phase = ?",
            (volume, step, phase),
        ).fetchone()
        return int(row[0]) if row else 0

    # -- workflows -------------------------------------------------------------------------

    def start_workflow(self, volume: str, kind: str, data: dict[str, object]) -> Workflow:
        """Record a new running workflow; StoreError if the volume already runs one."""
        now = time.time()
        cursor = self._query(
            "INSERT INTO workflows (volume, kind, status, step, data, started, updated) "
            "VALUES (?, ?, 'running', 0, ?, ?, ?)",
            (volume, kind, json.dumps(data, default=str), now, now),
        )
        return Workflow(int(cursor.lastrowid or 0), volume, kind, "running", 0, data, now, now)

    def running_workflow(self, volume: str) -> Workflow | None:
        row = self._query(
            "SELECT id, volume, kind, status, step, data, started, updated FROM workflows "
            "WHERE volume = ? AND status = 'running'",
            (volume,),
        ).fetchone()
        return _workflow(row) if row else None

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
        self, name: str, holder: str, ttl: float, *, now: float | None = None
    ) -> bool:
        """Take or renew the lease ``name`` for ``ttl`` seconds; False while another holder's
        lease has not expired."""
        at = time.time() if now is None else now
        cursor = self._query(
            "INSERT INTO leases VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
            "holder = excluded.holder, expires = excluded.expires "
            "WHERE leases.holder = excluded.holder OR leases.expires < ?",
            (name, holder, at + ttl, at),
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

    def _query(self, sql: str, args: tuple[object, ...]) -> _Result:
        """One statement and all its rows, under the store's lock: the controller, the
        agent and the API call the store from worker threads, and one sqlite connection
        must not be used by two at once."""
        with self._lock:
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


def _desired(volume: str, text: object) -> VolumeDesired:
    try:
        data = json.loads(str(text))
        return VolumeDesired(
            volume=str(data["volume"]),
            offered=tuple(map(str, data["offered"])),
            active=str(data["active"]),
            fenced=tuple(map(str, data["fenced"])),
            generation=int(data["generation"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        reason = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        shown = str(text)[:80]
        raise StoreError(
            f"desired state of volume {volume}: unreadable row ({reason}): {shown!r}"
        ) from None


def open_store(url: StoreUrl, *, timeout: float = 5.0) -> SqliteStore:
    if url.scheme == "sqlite" and url.sqlite_path is not None:
        return SqliteStore(url.sqlite_path, timeout=timeout)
    raise StoreError(f"{url}: the etcd store is not available yet; use sqlite:///PATH")
