"""The files the agent manages: never one it did not write, and a reload that signals
automount alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from nfs_failover.errors import SteeringError
from nfs_failover.steering import autofs_files


def test_a_managed_file_never_replaces_one_nfs_failover_did_not_write(tmp_path: Path) -> None:
    users = tmp_path / "auto.misc"
    users.write_text("cd -fstype=iso9660,ro :/dev/cdrom\n")
    with pytest.raises(SteeringError, match="exists and was not written by nfs-failover"):
        autofs_files.write_atomically(users, autofs_files.HEADER + "crr -fstype=nfs a:/b\n")
    assert users.read_text() == "cd -fstype=iso9660,ro :/dev/cdrom\n"
    ours = tmp_path / "auto.nfs-failover"
    assert autofs_files.write_atomically(ours, autofs_files.HEADER + "crr -fstype=nfs a:/b\n")
    assert autofs_files.write_atomically(ours, autofs_files.HEADER + "crr -fstype=nfs c:/d\n")


@pytest.mark.parametrize("held", ["0", "-1", "1"])
def test_a_pid_file_that_names_no_automount_signals_nothing(tmp_path: Path, held: str) -> None:
    pidfile = tmp_path / "autofs.pid"
    pidfile.write_text(held + "\n")
    with pytest.raises(SteeringError) as caught:  # 0: our group; -1: everything; 1: init
        autofs_files.reload_automount(pidfile, systemd=False)
    assert str(caught.value).startswith(f"{pidfile}: ")
    assert "not the pid of a process" in str(caught.value) or "not automount" in str(caught.value)
