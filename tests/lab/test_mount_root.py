"""What labs share on the host: the folder the client hosts' autofs mounts under (/misc)
and routing."""

from __future__ import annotations

from pathlib import Path

from nfs_failover.lab.lab import (
    claim_ip_forward,
    claim_mount_root,
    release_ip_forward,
    release_mount_root,
)


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


def test_routing_is_put_back_by_the_last_lab_down(tmp_path: Path) -> None:
    sysctl, run = tmp_path / "ip_forward", tmp_path / "run"
    run.mkdir()
    sysctl.write_text("0\n")
    first, second = run / "lab-default-0.ip_forward", run / "lab-b-46.ip_forward"
    claim_ip_forward(first, sysctl)
    claim_ip_forward(second, sysctl)  # finds routing on: not what it was before any lab
    release_ip_forward(first, sysctl)
    assert sysctl.read_text() == "1\n"  # the other lab still routes its clients
    release_ip_forward(second, sysctl)
    assert sysctl.read_text() == "0\n" and not list(run.iterdir())


def test_a_lab_up_under_an_earlier_version_still_puts_routing_back(tmp_path: Path) -> None:
    sysctl, run = tmp_path / "ip_forward", tmp_path / "run"
    run.mkdir()
    sysctl.write_text("1\n")
    old = run / "lab-default-0.ip_forward"
    old.write_text("0\n")  # that version kept the value before it in its own marker
    claim_ip_forward(run / "lab-b-46.ip_forward", sysctl)
    release_ip_forward(old, sysctl)
    release_ip_forward(run / "lab-b-46.ip_forward", sysctl)
    assert sysctl.read_text() == "0\n" and not list(run.iterdir())
