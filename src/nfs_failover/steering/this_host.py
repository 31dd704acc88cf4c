"""The machine the agent runs on, as a ``Machine`` (steering/machine.py): its own files,
automount, mount table and processes, every child run through the process's ``RUNNER``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nfs_failover.steering.autofs_files import reload_automount
from nfs_failover.steering.children import CHILD_ARGV, RUNNER, MountKey
from nfs_failover.steering.machine import Ran
from nfs_failover.steering.mountinfo import MOUNTINFO, read_mountinfo_file

__all__ = ["ThisHost"]


@dataclass(frozen=True)
class ThisHost:
    """The machine the agent runs on: its own files, automount, mounts and processes."""

    mountinfo: Path = MOUNTINFO
    name: str = "this host"

    def files_path(self, path: Path) -> Path:
        return path

    def reload_automount(self, pidfile: Path, *, systemd: bool) -> str:
        return reload_automount(pidfile, systemd=systemd)

    def read_mountinfo(self) -> bytes:
        return read_mountinfo_file(self.mountinfo)

    def check(self, path: str, timeout: float, mount: MountKey) -> Ran:
        return RUNNER.run([*CHILD_ARGV, path], timeout, mount)

    def run_bounded(self, argv: Sequence[str], timeout: float) -> Ran:
        return RUNNER.run(argv, timeout)
