"""The stores the store tests run against: sqlite in a test's folder, and a real etcd (one
server per session, plain and TLS with client certificates), each test under its own key
prefix so that tests stay independent of each other on the shared server."""

from __future__ import annotations

import base64
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nfs_failover.store import EtcdStore, SqliteStore, Store
from tests.store.etcd_server import EtcdServer, TlsFiles


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    server = EtcdServer(tmp_path_factory.mktemp("etcd"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def etcd_tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    folder = tmp_path_factory.mktemp("etcd-tls")
    server = EtcdServer(folder / "server", tls=TlsFiles.make(folder / "tls"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


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


def etcd_backend(server: EtcdServer, prefix: str, name: str) -> Backend:
    def corrupt(volume: str, text: str) -> None:
        key = f"{prefix}desired/{volume}".encode()
        server.post(
            "/v3/kv/put",
            {
                "key": base64.b64encode(key).decode(),
                "value": base64.b64encode(text.encode()).decode(),
            },
        )

    def opener() -> Store:
        return EtcdStore([server.endpoint], settings=server.settings(prefix), timeout=5.0)

    return Backend(name, opener, corrupt)


@pytest.fixture(params=["sqlite", "etcd", "etcd-tls"])
def backend(request: pytest.FixtureRequest, tmp_path: Path, prefix: str) -> Iterator[Backend]:
    if request.param == "sqlite":
        made = sqlite_backend(tmp_path)
    else:
        fixture = "etcd_server" if request.param == "etcd" else "etcd_tls_server"
        made = etcd_backend(request.getfixturevalue(fixture), prefix, request.param)
    try:
        yield made
    finally:
        for store in made.opened:
            store.close()


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.open()
