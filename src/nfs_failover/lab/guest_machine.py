"""A lab client host as the machine an agent steers from the host (``steering.machine``).

The agent runs on the host (a sqlite store must not be shared over 9p): it writes the
client's autofs files into the client's shared folder, where the guest's ``/etc`` links
point, and reloads the guest's automount, reads its mount table, checks and unmounts its
mounts through the lab's command channel, each call with its deadline in the guest.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from pathlib import Path

from nfs_failover.config import AutofsSettings, Config
from nfs_failover.errors import LabError, SteeringError
from nfs_failover.lab import clients
from nfs_failover.lab.clients import ClientHost
from nfs_failover.lab.lab import Lab
from nfs_failover.steering.machine import Ran

_STALE = "Stale file handle"
_DEFAULTS = AutofsSettings()


class GuestMachine:
    def __init__(self, client: ClientHost) -> None:
        self.client = client

    @property
    def name(self) -> str:
        return self.client.name

    def files_path(self, path: Path) -> Path:
        return self.client.files_root / path.relative_to("/")

    def reload_automount(self, pidfile: Path, *, systemd: bool) -> str:
        del systemd  # a client host has no systemd: its automount runs in the foreground
        try:
            pid = clients.automount_pid(self.client, pidfile, signal="HUP")
            if pid is None:
                return f"automount is not running in {self.name}: nothing to reload"
        except LabError as exc:
            raise SteeringError(f"reload of automount in {self.name} failed: {exc}") from None
        return f"SIGHUP to automount (pid {pid}) in {self.name}"

    def read_mountinfo(self) -> bytes:
        try:
            ran = clients.exec_sync(self.client, ["cat", "/proc/self/mountinfo"], timeout=10)
            return clients.check(ran).stdout
        except LabError as exc:
            raise SteeringError(f"cannot read the mount table of {self.name}: {exc}") from None

    def check(self, path: str, timeout: float, mount: tuple[str, int]) -> Ran:
        """statvfs of ``path`` in the guest: ``stat -f`` asks the server as statvfs does
        and starts far quicker there than a Python child."""
        del mount  # the guest abandons a stuck check itself
        try:
            ran = clients.exec_sync(
                self.client, ["stat", "-f", "-c", "%b", "--", path], timeout=timeout
            )
        except LabError as exc:
            return Ran(1, "", f"{self.name} did not answer: {exc}", 0)
        if ran.timed_out:
            return Ran(None, "", "", 0)
        stderr = ran.stderr.decode(errors="replace")
        if ran.ok:
            return Ran(0, f"ok {ran.seconds:.6f}", "", 0)
        if _STALE in stderr:
            return Ran(0, f"error {errno.ESTALE} ESTALE", "", 0)
        return Ran(ran.returncode, "", stderr, 0)

    def run_bounded(self, argv: Sequence[str], timeout: float) -> Ran:
        try:
            ran = clients.exec_sync(self.client, argv, timeout=timeout)
        except LabError as exc:
            raise OSError(f"{self.name} did not answer: {exc}") from None
        return Ran(
            ran.returncode,
            ran.stdout.decode(errors="replace"),
            ran.stderr.decode(errors="replace"),
            0,
        )


def for_lab_client(
    config: Config, name: str, state_dir: Path | None = None
) -> tuple[Config, GuestMachine]:
    """The config and machine of an agent that steers the lab's client host ``name``
    (``--lab-client``); LabError if that client host is not running."""
    host = Lab.from_state_dir(state_dir).client(name)
    if not clients.qemu_pids(host.tap):
        raise LabError(f"client host {name} is not running (nfs-failover lab up --clients N)")
    return client_config(config), GuestMachine(host)


def client_config(config: Config) -> Config:
    """The lab config as the agent of a client host sees it: the client's own autofs
    paths, as on a real client (``/misc``, ``/etc/auto.master.d``, ``/run/autofs.pid``)."""
    autofs = config.autofs.model_copy(
        update={
            "root": Path("/"),
            "mount_root": clients.MOUNT_ROOT,
            "master_dropin": _DEFAULTS.master_dropin,
            "map_file": _DEFAULTS.map_file,
            "pidfile": clients.AUTOMOUNT_PIDFILE,
        }
    )
    return config.model_copy(update={"autofs": autofs})
