"""A tiny FUSE filesystem for mount tests, run as its own process.

    python hung_fuse.py MOUNTPOINT {hung,healthy,stale}

``hung``: getattr and statfs of the root never return, as on a hard NFS mount of a dead
server (a statvfs caller sits in state D until this process is SIGKILLed). ``healthy``:
both answer. ``stale``: getattr answers and statfs fails with ESTALE, as a replaced NFS
export does. It runs in the foreground, in a process of its own, so that its blocked
threads can never block a test; tests end it with SIGKILL and then ``umount -l``.
"""

from __future__ import annotations

import errno
import stat
import sys
import threading
from typing import Any

import mfusepy

MODES = ("hung", "healthy", "stale")
_NEVER = threading.Event()  # never set: a blocked callback waits for ever


class TestFs(mfusepy.Operations):
    use_ns = True

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        if path != "/":
            raise mfusepy.FuseOSError(errno.ENOENT)
        if self.mode == "hung":
            _NEVER.wait()
        return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2}

    def statfs(self, path: str) -> dict[str, int]:
        if self.mode == "hung":
            _NEVER.wait()
        if self.mode == "stale":
            raise mfusepy.FuseOSError(errno.ESTALE)
        return {
            "f_bsize": 4096,
            "f_frsize": 4096,
            "f_blocks": 1024,
            "f_bfree": 512,
            "f_bavail": 512,
            "f_files": 100,
            "f_ffree": 50,
            "f_namemax": 255,
        }

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", ".."]


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[2] not in MODES:
        print(f"usage: {argv[0]} MOUNTPOINT {{{','.join(MODES)}}}", file=sys.stderr)
        return 2
    mountpoint, mode = argv[1], argv[2]
    mfusepy.FUSE(TestFs(mode), mountpoint, foreground=True, fsname=f"nfsfailover-{mode}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
