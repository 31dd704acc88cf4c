"""The child processes of the mount checks and of healing: a statvfs of one path, or a
scan for a mount's users.

``checks`` and ``healing`` run this file as a script (``children.CHILD_ARGV``: ``python
-I -S mount_check_child.py ...``), so it imports nothing but the standard library and
starts in milliseconds. Either may block for ever in the kernel on a dead server; the
parent gives up on it at its deadline.

    mount_check_child.py PATH                      -> "ok SECONDS" or "error ERRNO NAME"
    mount_check_child.py --holders MOUNT_POINT [PROC [MOUNT_ID]]
                                                   -> one JSON [pid, command, uses] a line

The scan is a child too because reading ``/proc/PID/maps`` takes the process's mmap
lock, which a process stuck on a dead NFS server may hold. With ``MOUNT_ID`` a process
also holds the mount when its cwd, root or an open file is on that mount, whatever the
path says: after a lazy unmount, paths on the detached mount no longer start with the
mount point. The mount id is read from fdinfo, never from the file, so the scan never
asks the server anything.
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


def _mount_id(fdinfo: str) -> int | None:
    try:
        with open(fdinfo, "rb") as file:
            for line in file.read(4096).split(b"\n"):
                if line.startswith(b"mnt_id:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _link_mount_id(link: str) -> int | None:
    """The mount id of what a /proc magic link (cwd, root) points at: opened O_PATH, which
    neither opens the file nor asks its filesystem anything, and read from our fdinfo."""
    try:
        fd = os.open(link, os.O_PATH)
    except OSError:
        return None
    try:
        return _mount_id(f"/proc/self/fdinfo/{fd}")
    finally:
        os.close(fd)


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


def uses(process: str, mount_point: str, mount_id: int | None = None) -> list[str]:
    """How the process whose /proc folder is ``process`` uses the mount (``cwd``, ``fd 3``,
    ``root``, ``maps``); empty if it does not."""
    found = [
        link
        for link in ("cwd", "root")
        if _link_under(f"{process}/{link}", mount_point)
        or (mount_id is not None and _link_mount_id(f"{process}/{link}") == mount_id)
    ]
    try:
        fds = sorted((fd for fd in os.listdir(f"{process}/fd") if fd.isdigit()), key=int)
    except OSError:
        fds = []
    found += [
        f"fd {fd}"
        for fd in fds[:MAX_FDS]
        if _link_under(f"{process}/fd/{fd}", mount_point)
        or (mount_id is not None and _mount_id(f"{process}/fdinfo/{fd}") == mount_id)
    ]
    if _mapped_under(f"{process}/maps", mount_point):
        found.append("maps")
    return found


def holders(
    mount_point: str, proc: str = "/proc", mount_id: int | None = None
) -> Iterator[tuple[int, str, list[str]]]:
    """(pid, command, uses) of every process using something under ``mount_point`` (or on
    the mount ``mount_id``)."""
    try:
        pids = sorted(int(name) for name in os.listdir(proc) if name.isdigit())
    except OSError:
        return
    for pid in pids:
        if pid == os.getpid():
            continue  # this scan's own descriptors are no user of the mount
        found = uses(f"{proc}/{pid}", mount_point, mount_id)
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
    elif len(argv) in (3, 4, 5) and argv[1] == "--holders":
        proc = argv[3] if len(argv) > 3 else "/proc"
        mount_id = int(argv[4]) if len(argv) > 4 else None
        for holder in holders(argv[2], proc, mount_id):
            sys.stdout.write(json.dumps(holder) + "\n")
    else:
        sys.stderr.write(
            "usage: mount_check_child.py PATH | --holders MOUNT_POINT [PROC [MOUNT_ID]]\n"
        )
        return 2
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
