"""The lab's client side: Debian's real automount daemon in a private mount namespace.

It cannot mount NFS here (no kernel NFS client), but its debug log names the entry it
read and the replica it would mount (docs/lab.md). That is how the lab's client picks a
replica exactly as a real client would, and how tests prove the rendered order holds.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_CALLING_MOUNT = re.compile(r"calling mount -t nfs\S* (?:-\S+ )*(?:-o \S+ )?(\S+:\S+) ")


class Automount:
    def __init__(self, process: subprocess.Popen[bytes], log: Path) -> None:
        self.process = process
        self.log = log

    @property
    def pid(self) -> int:
        return self.process.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, needle: str, timeout: float = 10.0, after: int = 0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()[after:]
            if needle in text:
                return text
            if self.process.poll() is not None:
                raise AssertionError(f"automount exited: {self.text()[-2000:]}")
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not in automount's log: {self.text()[-2000:]}")

    def look_up(self, path: Path, timeout: float = 60.0) -> str:
        """Access ``path`` inside the daemon's namespace; return the log it wrote meanwhile.

        An access the daemon did not see (it is still starting) is repeated.
        """
        start = len(self.text())
        for _ in range(5):
            subprocess.run(
                ["nsenter", "-t", str(self.pid), "-m", "stat", str(path)],
                capture_output=True, timeout=timeout, check=False,
            )  # fmt: skip
            if "handle_packet_missing" in self.text()[start:]:
                break
            time.sleep(0.2)
        self.wait_for("dev_ioctl_send_", after=start, timeout=timeout)  # answered the kernel
        return self.text()[start:]

    def reload(self) -> None:
        start = len(self.text())
        os.kill(self.pid, signal.SIGHUP)
        self.wait_for("re-reading map", after=start)

    def replica_for(self, path: Path, timeout: float = 60.0) -> str | None:
        """The HOST:/PATH the daemon would mount for ``path`` now (its first choice), or
        None when the map offers nothing there. A key still negatively cached after a
        failed mount is looked up again once the cache expires (``--negative-timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.look_up(path, timeout=max(deadline - time.monotonic(), 1.0))
            tried = mounts_tried(log)
            if tried:
                return tried[0]
            if "lookup_mount" in log or time.monotonic() > deadline:
                return None  # the daemon read the map and found nothing to mount
            time.sleep(0.25)  # answered from its negative cache: ask again when it expires


def mounts_tried(log: str) -> list[str]:
    """The HOST:/PATH of each ``mount -t nfs`` the daemon ran, in order."""
    return _CALLING_MOUNT.findall(log)


@contextmanager
def automount(master: Path, workdir: Path) -> Iterator[Automount]:
    """Run automount on ``master`` (its pid file and log in ``workdir``) for the block."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "automount.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            # Line-buffered: its log goes to a file, and the tests read it as it comes.
            ["unshare", "-m", "--propagation", "private", "stdbuf", "-oL", "-eL",
             "automount", "-f", "-d", "-C", "-p", str(workdir / "automount.pid"), str(master)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            # Its own process group: autofs never triggers mounts for the daemon's group,
            # so a lookup from the test's group would get ENOENT without reaching it.
            start_new_session=True,
        )  # fmt: skip
    daemon = Automount(process, log)
    try:
        daemon.wait_for("st_ready")
        yield daemon
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGUSR2)  # unmount everything and exit
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
