"""The real automount daemon for tests: Debian's autofs in a private mount namespace.

It cannot mount NFS here (no kernel NFS), but its debug log names the entry it read and
the replica it would mount (docs/lab.md), which is what these tests need.
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


def mounts_tried(log: str) -> list[str]:
    """The HOST:/PATH of each ``mount -t nfs`` the daemon ran, in order."""
    return _CALLING_MOUNT.findall(log)


@contextmanager
def automount(master: Path, workdir: Path) -> Iterator[Automount]:
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
