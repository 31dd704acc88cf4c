"""Divergence over NFS, as the cloud providers get it: both replicas walked for real."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from nfs_failover.config import Volume
from nfs_failover.errors import ProviderTimeout
from nfs_failover.lab import Lab
from nfs_failover.nfs_tree import copy_out, safe_name, walk_export
from nfs_failover.replication.local import LocalProvider
from nfs_failover.replication.nfs_divergence import divergence_over_nfs
from tests.replication.helpers import T, folders, settle

pytestmark = pytest.mark.lab


def test_walking_an_export_over_nfs_finds_every_file_with_its_size(
    provider: LocalProvider,
    volume: Volume,
) -> None:
    source, _ = folders(volume)
    (source / "top").write_text("1")
    (source / "a" / "b" / "c").mkdir(parents=True)
    (source / "a" / "b" / "c" / "deep").write_text("12345")
    for i in range(300):  # more than one READDIRPLUS page
        (source / "a" / f"many-{i:03}").write_text("x" * i)
    tree = asyncio.run(walk_export(volume.replicas[0].export, timeout=T))
    assert len(tree) == 302
    assert tree["a/b/c/deep"].size == 5
    assert tree["a/many-299"].size == 299


def test_divergence_over_nfs_attributes_changes_creations_and_deletions_to_their_side(
    provider: LocalProvider,
    volume: Volume,
) -> None:
    source, destination = folders(volume)
    for name in ("a", "b", "c", "same"):
        (source / name).write_text(name)
    asyncio.run(provider.transfer_now(timeout=T))
    asyncio.run(provider.break_(timeout=T))
    settle()
    since = datetime.now(UTC)
    settle()
    (source / "a").write_text("changed on the source")
    (source / "new-on-source").write_text("x")
    (source / "b").unlink()
    (destination / "c").write_text("changed on the destination")
    (destination / "new-on-destination").write_text("y")
    found = asyncio.run(
        divergence_over_nfs(
            volume.replicas[0].export,
            volume.replicas[1].export,
            since,
            timeout=T,
            margin=timedelta(0),
        )
    )
    assert found.source_only == ("a", "b", "new-on-source")
    assert found.destination_only == ("c", "new-on-destination")


def test_divergence_over_nfs_gives_up_at_its_deadline_on_a_dead_replica(
    provider: LocalProvider,
    volume: Volume,
    replication_lab: Lab,
) -> None:
    replication_lab.outage("az2")
    try:
        started = time.monotonic()
        with pytest.raises(ProviderTimeout):
            asyncio.run(
                divergence_over_nfs(
                    volume.replicas[0].export,
                    volume.replicas[1].export,
                    datetime.now(UTC),
                    timeout=1.0,
                )
            )
        assert time.monotonic() - started < 1.0 + 0.5
    finally:
        replication_lab.restore("az2")


def test_copying_out_never_writes_outside_its_folder_nor_through_a_symlink(
    provider: LocalProvider, volume: Volume, tmp_path: Path
) -> None:
    source, _ = folders(volume)
    (source / "sub").mkdir()
    (source / "sub" / "file").write_text("late write")
    (source / "kept").write_text("kept")
    target, outside = tmp_path / "preserved", tmp_path / "outside"
    outside.mkdir()
    target.mkdir()
    (target / "sub").symlink_to(outside)  # planted: sub/file would land in outside/
    paths = ["kept", "sub/file", "../../escape", "a/./b", "nul\0name"]
    copied, missing = asyncio.run(copy_out(volume.replicas[0].export, paths, target, timeout=T))
    assert copied == ["kept"]
    assert missing == ["sub/file", "../../escape", "a/./b", "nul\0name"]
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "escape").exists()
    assert (target / "kept").read_text() == "kept"
    assert (target / "kept").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("file", True),
        (".hidden", True),
        ("..", False),
        (".", False),
        ("", False),
        ("a/b", False),
        ("../../../../x", False),
        ("nul\0", False),
    ],
)
def test_only_plain_names_from_a_server_are_safe(name: str, safe: bool) -> None:
    assert safe_name(name) is safe
