"""The client machine an agent steers: where its autofs files go, how its automount is told
to reload, and how its mounts are read, checked and unmounted.

On a real client that is the machine the agent runs on (``this_host.ThisHost``). In the lab
it may be a client host (a VM) that the agent steers from the host through the lab's
command channel (``lab.guest_machine``). The contract:

- ``files_path`` is pure: where a managed file of the client (a path as the client sees
  it) is written from here.
- ``reload_automount`` returns a sentence saying what it did, or raises SteeringError;
  it ends within about 30 s.
- ``read_mountinfo`` never contacts an NFS server; raises SteeringError when the table
  cannot be read; ends within about 10 s.
- ``check`` asks the server behind one mount for its statvfs and ends by ``timeout`` (a
  little past it on a remote machine): a check that did not end is abandoned on the
  client, and reported with ``returncode`` None. Its stdout is ``ok SECONDS`` or
  ``error ERRNO NAME`` (``mount_check_child``'s protocol).
- ``run_bounded`` runs a short program (``umount``, the holders scan) with the same
  deadline rule; raises OSError when it cannot be started.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Ran:
    """How a bounded child ended. ``returncode`` None: killed and abandoned at the deadline."""

    returncode: int | None
    stdout: str
    stderr: str
    pid: int


class Machine(Protocol):
    @property
    def name(self) -> str: ...

    def files_path(self, path: Path) -> Path: ...

    def reload_automount(self, pidfile: Path, *, systemd: bool) -> str: ...

    def read_mountinfo(self) -> bytes: ...

    def check(self, path: str, timeout: float, mount: tuple[str, int]) -> Ran: ...

    def run_bounded(self, argv: Sequence[str], timeout: float) -> Ran: ...
