"""Replication tests on a lab of their own: they flip exports between read-only and
read-write, which the shared lab's tests must not see. Each test gets the lab's volume
with empty folders, a fresh relationship state and the normal access."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nfs_failover import ganesha
from nfs_failover.config import LocalReplication, Volume, load_config
from nfs_failover.lab import Lab
from nfs_failover.replication.local import LocalProvider
from tests.conftest import fresh_lab, require_lab

T = 30.0  # every operation's deadline


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def empty(folder: Path) -> None:
    """Remove what a folder holds; the folder itself is an export root Ganesha holds."""
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def settle() -> None:
    """Put the coarse file clock's tick between a write and a transfer's start."""
    time.sleep(0.1)


def folders(volume: Volume) -> tuple[Path, Path]:
    settings = volume.replication
    assert isinstance(settings, LocalReplication)
    return Path(settings.source_path), Path(settings.destination_path)


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
