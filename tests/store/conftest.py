"""The stores the store tests run against: sqlite in a test's folder, and a real etcd (one
server per session, plain and TLS with client certificates), each test under its own key
prefix so that tests stay independent of each other on the shared server."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nfs_failover.store import SqliteStore, Store


@pytest.fixture
def prefix() -> str:
    return f"/test-{uuid.uuid4().hex[:12]}/"


@dataclass
class Backend:
    """One place a store keeps its state; ``open`` gives another store object on it (as a
    second controller or an agent would have), all closed at the end of the test."""

    name: str
    opener: Callable[[], Store]
    corrupt: Callable[[str, str], None]  # (volume, text): a desired record made unreadable
    opened: list[Store] = field(default_factory=list)

    def open(self) -> Store:
        store = self.opener()
        self.opened.append(store)
        return store


def sqlite_backend(folder: Path) -> Backend:
    path = folder / "state.db"

    def corrupt(volume: str, text: str) -> None:  # through the file, not the store
        with sqlite3.connect(path) as db:
            db.execute("INSERT OR REPLACE INTO desired VALUES (?, 1, ?, 0)", (volume, text))

    return Backend("sqlite", lambda: SqliteStore(path), corrupt)


@pytest.fixture(params=["sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path, prefix: str) -> Iterator[Backend]:
    made = sqlite_backend(tmp_path)
    try:
        yield made
    finally:
        for store in made.opened:
            store.close()


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.open()
