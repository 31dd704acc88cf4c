"""Debian's real automount in a lab client host, seen from the host.

The daemon runs in the guest in the foreground with debug logging into the client's
shared folder (``clients.start_automount``), so the host reads its decisions as they come:
``lookup_mount: ... crr -> <entry>``, the ping time per host, ``calling mount -t nfs ...
HOST:/PATH``. Accesses happen in the guest through the command channel, and the kernel
NFS client there really mounts the replica: ``/proc/mounts`` in the guest says which.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import PurePosixPath

from nfs_failover.errors import LabError
from nfs_failover.lab import clients
from nfs_failover.lab.clients import ClientHost
from nfs_failover.pacing import Deadline
from nfs_failover.steering.healing import UMOUNT

_CALLING_MOUNT = re.compile(r"calling mount -t nfs\S* (?:-\S+ )*(?:-o \S+ )?(\S+:\S+) ")
# What a SIGHUP (the agent's reload) makes the daemon log. Not "re-reading map for ...":
# the daemon also logs that on a lookup when it finds its map file newer than its copy.
RELOADED = "re-reading master map"


def mounts_tried(log: str) -> list[str]:
    """The HOST:/PATH of each ``mount -t nfs`` the daemon ran, in order."""
    return _CALLING_MOUNT.findall(log)


@dataclass(frozen=True)
class Mount:
    source: str  # HOST:/PATH
    fstype: str
    options: str


class GuestAutomount:
    """The automount daemon of one client host."""

    def __init__(self, client: ClientHost) -> None:
        self.client = client
        self.log = clients.automount_log(client)

    @property
    def pid(self) -> int:
        pid = clients.automount_pid(self.client)
        if pid is None:
            raise LabError(f"{self.client.name}: automount is not running")
        return pid

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, needle: str, *, after: int = 0, timeout: float = 30.0) -> str:
        """The log from ``after`` on, once ``needle`` is in it; LabError at the deadline."""
        deadline = Deadline(timeout)
        while True:
            text = self.text()[after:]
            if needle in text:
                return text
            if deadline.passed():
                raise LabError(
                    f"{self.client.name}: {needle!r} not in automount's log within "
                    f"{timeout:g}s: ...{text[-500:]}"
                )
            time.sleep(0.05)

    def reload(self) -> None:
        """SIGHUP, then wait until the daemon re-read its maps."""
        start = len(self.text())
        clients.check(clients.exec_sync(self.client, ["kill", "-HUP", str(self.pid)], timeout=10))
        self.wait_for(RELOADED, after=start)

    def wait_mounted_root(self, root: PurePosixPath, timeout: float = 30.0) -> None:
        """Until the daemon has its autofs mount on ``root`` (it does so after a reload)."""
        deadline = Deadline(timeout)
        while not any(m.fstype == "autofs" for m in self.mounts_at(root)):
            if deadline.passed():
                raise LabError(f"{self.client.name}: no autofs mount on {root} in {timeout:g}s")
            time.sleep(0.1)

    def mounts_at(self, path: PurePosixPath) -> list[Mount]:
        """What ``/proc/mounts`` in the guest lists at ``path`` (never touches the path)."""
        table = clients.check(clients.exec_sync(self.client, ["cat", "/proc/mounts"], timeout=10))
        found = []
        for line in table.text().splitlines():
            fields = line.split()
            if len(fields) >= 4 and fields[1] == str(path):
                found.append(Mount(fields[0], fields[2], fields[3]))
        return found

    def mounted(self, path: PurePosixPath) -> str | None:
        """The HOST:/PATH of the NFS mount at ``path`` in the guest, or None."""
        nfs = [m for m in self.mounts_at(path) if m.fstype.startswith("nfs")]
        return nfs[-1].source if nfs else None

    def access(self, path: PurePosixPath, timeout: float = 60.0) -> clients.ExecResult:
        """``ls`` of ``path`` in the guest: what a program's first access does."""
        return clients.exec_sync(self.client, ["ls", str(path)], timeout=timeout)

    def unmount(self, path: PurePosixPath) -> None:
        """Lazily unmount whatever is mounted at ``path`` (nothing: no harm), so the next
        access is a fresh lookup; never waits for a server, never triggers a mount."""
        clients.exec_sync(self.client, [*UMOUNT, str(path)], timeout=10)

    def replica_for(self, path: PurePosixPath, timeout: float = 60.0) -> str | None:
        """The HOST:/PATH a fresh access to ``path`` mounts now, or None when the map offers
        nothing there or the access failed. The mount is released right away, so the next
        call is a fresh lookup too."""
        self.unmount(path)
        self.access(path, timeout=timeout)
        found = self.mounted(path)
        self.unmount(path)
        return found
