"""The child processes of ``mounts``: a statvfs of one path, or a scan for a mount's users.

``mounts`` runs this file as a script (``python -I -S mount_check_child.py ...``), so it
imports nothing but the standard library and starts in milliseconds. Either may block
for ever in the kernel on a dead server; the parent gives up on it at its deadline.

    mount_check_child.py PATH                      -> "ok SECONDS" or "error ERRNO NAME"
    mount_check_child.py --holders MOUNT_POINT [PROC] -> one JSON [pid, command, uses] a line

The scan is a child too because reading ``/proc/PID/maps`` takes the process's mmap
lock, which a process stuck on a dead NFS server may hold.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import time
from collections.abc import Callable, Iterator

MAX_MAPS_BYTES = 16 * 1024 * 1024  # read of one process's maps
MAX_FDS = 65536  # looked at per process


def check(path: str, statvfs: Callable[[str], object] = os.statvfs) -> str:
    """The line reporting one statvfs of ``path``: ``ok 0.000125`` or ``error 116 ESTALE``.

    statvfs, not stat: an NFS client may answer stat from its attribute cache, while
    statvfs always asks the server.
    """
    started = time.monotonic()
    try:
        statvfs(path)
    except OSError as exc:
        number = exc.errno or 0
        return f"error {number} {errno.errorcode.get(number, 'UNKNOWN')}"
    return f"ok {time.monotonic() - started:.6f}"


def _under(target: str, mount_point: str) -> bool:
    return target == mount_point or target.startswith(mount_point.rstrip("/") + "/")


def _link_under(link: str, mount_point: str) -> bool:
    # readlink only: the link's target is never looked up, so the mount is never touched.
    try:
        return _under(os.readlink(link), mount_point)
    except OSError:
        return False


def _mapped_under(maps: str, mount_point: str) -> bool:
    try:
        with open(maps, "rb") as file:
            data = file.read(MAX_MAPS_BYTES)
    except OSError:
        return False
    for line in data.split(b"\n"):
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and _under(os.fsdecode(parts[5]), mount_point):
            return True
    return False


def uses(process: str, mount_point: str) -> list[str]:
    """How the process whose /proc folder is ``process`` uses the mount (``cwd``, ``fd 3``,
    ``root``, ``maps``); empty if it does not."""
    found = [link for link in ("cwd", "root") if _link_under(f"{process}/{link}", mount_point)]
    try:
        fds = sorted((fd for fd in os.listdir(f"{process}/fd") if fd.isdigit()), key=int)
    except OSError:
        fds = []
    found += [f"fd {fd}" for fd in fds[:MAX_FDS] if _link_under(f"{process}/fd/{fd}", mount_point)]
    if _mapped_under(f"{process}/maps", mount_point):
        found.append("maps")
    return found


def holders(mount_point: str, proc: str = "/proc") -> Iterator[tuple[int, str, list[str]]]:
    """(pid, command, uses) of every process using something under ``mount_point``."""
    try:
        pids = sorted(int(name) for name in os.listdir(proc) if name.isdigit())
    except OSError:
        return
    for pid in pids:
        found = uses(f"{proc}/{pid}", mount_point)
        if found:
            try:
                with open(f"{proc}/{pid}/comm", "rb") as file:
                    command = file.read(64).decode(errors="replace").strip()
            except OSError:
                command = "?"
            yield pid, command, found


def main(argv: list[str]) -> int:
    if len(argv) == 2 and not argv[1].startswith("--"):
        sys.stdout.write(check(argv[1]) + "\n")
    elif len(argv) in (3, 4) and argv[1] == "--holders":
        for holder in holders(*argv[2:]):
            sys.stdout.write(json.dumps(holder) + "\n")
    else:
        sys.stderr.write("usage: mount_check_child.py PATH | --holders MOUNT_POINT [PROC]\n")
        return 2
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
