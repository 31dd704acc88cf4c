"""The replication lab's fixtures: a lab of its own, its volume with empty folders, a fresh
relationship state and the normal access, and the local engine on that volume.

The replication tests and the controller tests both use them: each conftest imports them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from nfs_failover import ganesha
from nfs_failover.config import Volume, load_config
from nfs_failover.lab import Lab
from nfs_failover.replication.local import LocalProvider
from tests.helpers import fresh_lab, require_lab
from tests.replication.helpers import empty


@pytest.fixture(scope="session")
def replication_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    require_lab()
    built = fresh_lab(tmp_path_factory.mktemp("rlab") / "state", tag="r", slot=42)
    try:
        built.up()
        yield built
    finally:
        built.down()


@pytest.fixture
def volume(replication_lab: Lab, tmp_path: Path) -> Volume:
    config = load_config(replication_lab.config_path)
    base = config.volumes[0]
    settings = base.replication.model_copy(update={"state_dir": tmp_path / "relationship"})
    for zone, read_only in zip(replication_lab.zones, (False, True), strict=True):
        empty(zone.folder)
        if ganesha.set_access(zone.conf, zone.folder, read_only=read_only):
            ganesha.reload(zone.pidfile)
    return base.model_copy(update={"replication": settings})


@pytest.fixture
def provider(volume: Volume) -> Iterator[LocalProvider]:
    engine = LocalProvider(volume)
    yield engine
    asyncio.run(engine.close())
