"""The agent on the real lab, with the real automount daemon reading what it renders."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from nfs_failover.agent import Agent
from nfs_failover.config import Config, Mode, load_config
from nfs_failover.desired import VolumeDesired, failed_over, normal
from nfs_failover.lab import Lab
from nfs_failover.store import SqliteStore, StoreError

pytestmark = pytest.mark.lab


def lab_config(lab: Lab, tmp_path: Path, *, mode: Mode = Mode.READ_WRITE) -> Config:
    """The lab's config with the client's files and the store in this test's folder."""
    config = load_config(lab.config_path)
    volume = config.volumes[0].model_copy(update={"mode": mode})
    if mode is Mode.READ_ONLY:
        volume = volume.model_copy(
            update={
                "mount": volume.mount.model_copy(
                    update={"options": "ro,hard,tcp,vers=3,timeo=50,nolock"}
                )
            }
        )
    autofs = config.autofs.model_copy(
        update={"root": tmp_path / "client", "pidfile": tmp_path / "automount.pid"}
    )
    return config.model_copy(update={"volumes": (volume,), "autofs": autofs})


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "state.db")
    yield opened
    opened.close()


def cycle(config: Config, store: SqliteStore) -> str:
    """One agent cycle; returns the map it left."""

    async def once() -> None:
        agent = Agent(config, store, name="client1")
        try:
            result = await agent.cycle()
            assert not result.problems, result.problems
        finally:
            await agent.close()

    asyncio.run(once())
    return config.autofs.under_root(config.autofs.map_file).read_text()


def test_desired_state_changes_reach_the_rendered_map(
    lab: Lab, tmp_path: Path, store: SqliteStore
) -> None:
    config = lab_config(lab, tmp_path)
    volume = config.volumes[0]
    site1, dest1 = (str(r.export) for r in volume.replicas)
    first = cycle(config, store)  # nothing stored yet: the normal state
    assert site1.split(":")[0] in first and dest1.split(":")[0] not in first
    store.set_desired(failed_over(volume, generation=1), expected_generation=None)
    after = cycle(config, store)
    assert dest1.split(":")[0] in after and site1.split(":")[0] not in after


def test_a_fenced_replica_stays_gone_across_restarts_and_store_outages(
    lab: Lab, tmp_path: Path, store: SqliteStore
) -> None:
    config = lab_config(lab, tmp_path)
    volume = config.volumes[0]
    source_host = volume.replicas[0].export.host
    store.set_desired(failed_over(volume, generation=1), expected_generation=None)
    fenced_map = cycle(config, store)
    assert source_host not in fenced_map

    class Unavailable(SqliteStore):
        def all_desired(self) -> dict[str, VolumeDesired]:
            raise StoreError("state.db: database is locked")

    broken = Unavailable(tmp_path / "state.db")

    async def restarted() -> tuple[str, ...]:
        agent = Agent(config, broken, name="client1")
        try:
            return (await agent.cycle()).problems
        finally:
            await agent.close()

    problems = asyncio.run(restarted())
    assert any("maps left as they are" in p for p in problems)
    assert config.autofs.under_root(config.autofs.map_file).read_text() == fenced_map
    assert cycle(config, store) == fenced_map  # a fresh agent on a healthy store


def test_agent_reports_reach_the_store(lab: Lab, tmp_path: Path, store: SqliteStore) -> None:
    config = lab_config(lab, tmp_path)
    cycle(config, store)
    reports = {(r.agent, r.replica): r for r in store.reports("crr")}
    assert set(reports) == {("client1", "site1"), ("client1", "dest1")}
    assert all(r.up for r in reports.values())


def test_a_store_that_lost_its_records_never_unfences_a_replica(
    lab: Lab, tmp_path: Path, store: SqliteStore
) -> None:
    config = lab_config(lab, tmp_path)
    volume = config.volumes[0]
    source_host = volume.replicas[0].export.host
    store.set_desired(failed_over(volume, generation=3), expected_generation=None)
    fenced_map = cycle(config, store)
    assert source_host not in fenced_map
    # The store is replaced by an empty one (deleted, restored from an old backup, ...).
    store.close()
    (tmp_path / "state.db").unlink()
    empty = SqliteStore(tmp_path / "state.db")

    async def once() -> tuple[str, ...]:
        agent = Agent(config, empty, name="client1")
        try:
            return (await agent.cycle()).problems
        finally:
            await agent.close()

    problems = asyncio.run(once())
    assert config.autofs.under_root(config.autofs.map_file).read_text() == fenced_map
    assert problems == (
        "store: no record of volume crr; keeping the state last applied here (site1 fenced,"
        " dest1 active)",
    )
    # An explicit record moves it: the failback's normal state.
    empty.set_desired(normal(volume, False), expected_generation=None)
    assert source_host in cycle(config, empty)
    empty.close()


def test_a_corrupt_row_is_named_and_leaves_the_map_as_it_was(
    lab: Lab, tmp_path: Path, store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    config = lab_config(lab, tmp_path)
    volume = config.volumes[0]
    store.set_desired(failed_over(volume, generation=1), expected_generation=None)
    fenced_map = cycle(config, store)
    with contextlib.closing(sqlite3.connect(store.path)) as db, db:  # behind the store's back
        db.execute("UPDATE desired SET state = 'not json' WHERE volume = 'crr'")
    with pytest.raises(StoreError, match="desired state of volume crr: unreadable row"):
        store.get_desired("crr")
    assert store.all_desired() == {}
    assert "desired state of volume crr: unreadable row" in caplog.text

    async def once() -> tuple[str, ...]:
        agent = Agent(config, store, name="client1")
        try:
            return (await agent.cycle()).problems
        finally:
            await agent.close()

    assert any("keeping the state last applied here" in p for p in asyncio.run(once()))
    assert config.autofs.under_root(config.autofs.map_file).read_text() == fenced_map
