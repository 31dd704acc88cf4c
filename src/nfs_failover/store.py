"""The store: the desired state and the vantage points' reports, shared by the
controller and the agents.

The contract (kept by every implementation; sqlite now, etcd later):
- ``set_desired`` is a compare-and-swap on the volume's generation, so two writers never
  silently overwrite each other; readers always see a whole state, never half of one.
- Every call finishes within the store's ``timeout`` or raises ``StoreError``: a store
  that is briefly unavailable costs a caller one failed call, never a hang.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from nfs_failover.config import StoreUrl
from nfs_failover.desired import VolumeDesired
from nfs_failover.errors import NfsFailoverError


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
"""


class SqliteStore:
    """The store in one sqlite file (WAL), readable by root only."""

    def __init__(self, path: Path, *, timeout: float = 5.0) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            self._db = sqlite3.connect(
                path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{path}: cannot open the store ({exc})") from exc

    def close(self) -> None:
        self._db.close()

    def get_desired(self, volume: str) -> VolumeDesired | None:
        row = self._query("SELECT state FROM desired WHERE volume = ?", (volume,)).fetchone()
        return _desired(row[0]) if row else None

    def all_desired(self) -> dict[str, VolumeDesired]:
        rows = self._query("SELECT volume, state FROM desired", ()).fetchall()
        return {volume: _desired(state) for volume, state in rows}

    def set_desired(self, desired: VolumeDesired, *, expected_generation: int | None) -> bool:
        """Write ``desired`` if the stored generation is still ``expected_generation``
        (None: no state stored yet). Returns False, changing nothing, when it is not."""
        state = json.dumps(asdict(desired))
        if expected_generation is None:
            sql = "INSERT OR IGNORE INTO desired VALUES (?, ?, ?, ?)"
            args: tuple[object, ...] = (desired.volume, desired.generation, state, time.time())
        else:
            sql = ("UPDATE desired SET generation = ?, state = ?, updated = ? "
                   "WHERE volume = ? AND generation = ?")  # fmt: skip
            args = (desired.generation, state, time.time(), desired.volume, expected_generation)
        return self._query(sql, args).rowcount == 1

    def put_report(self, report: Report) -> None:
        self._query("INSERT OR REPLACE INTO reports VALUES (?, ?, ?, ?, ?, ?, ?)",
                    tuple(asdict(report).values()))  # fmt: skip

    def reports(self, volume: str | None = None) -> list[Report]:
        sql, args = "SELECT * FROM reports", ()
        if volume is not None:
            sql, args = sql + " WHERE volume = ?", (volume,)  # type: ignore[assignment]
        return [Report(a, v, r, bool(u), d, lat, at) for a, v, r, u, d, lat, at in
                self._query(sql, args).fetchall()]  # fmt: skip

    def _query(self, sql: str, args: tuple[object, ...]) -> sqlite3.Cursor:
        try:
            return self._db.execute(sql, args)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc


def _desired(text: str) -> VolumeDesired:
    data = json.loads(text)
    return VolumeDesired(
        volume=data["volume"],
        offered=tuple(data["offered"]),
        active=data["active"],
        fenced=tuple(data["fenced"]),
        generation=int(data["generation"]),
    )


def open_store(url: StoreUrl, *, timeout: float = 5.0) -> SqliteStore:
    if url.scheme == "sqlite" and url.sqlite_path is not None:
        return SqliteStore(url.sqlite_path, timeout=timeout)
    raise StoreError(f"{url}: the etcd store is not available yet; use sqlite:///PATH")
