"""The host folder the client hosts' autofs mounts under (/misc), shared by labs."""

from __future__ import annotations

from pathlib import Path

from nfs_failover.lab.lab import claim_mount_root, release_mount_root


def test_the_last_lab_down_removes_the_folder_a_lab_made(tmp_path: Path) -> None:
    root, run = tmp_path / "misc", tmp_path / "run"
    run.mkdir()
    first, second = run / "lab-default-0.mount_root", run / "lab-b-46.mount_root"
    claim_mount_root(first, root)
    claim_mount_root(second, root)  # a second lab finds the folder there
    release_mount_root(first, root)  # the lab that made it goes first
    assert root.is_dir()  # the other lab's client hosts still mount under it
    release_mount_root(second, root)
    assert not root.exists() and not list(run.iterdir())


def test_a_folder_that_was_there_before_any_lab_stays(tmp_path: Path) -> None:
    root, run = tmp_path / "misc", tmp_path / "run"
    run.mkdir()
    root.mkdir()
    marker = run / "lab-default-0.mount_root"
    claim_mount_root(marker, root)
    release_mount_root(marker, root)
    assert root.is_dir()
