"""Helpers of the mount tests: mountinfo text, real FUSE and bind mounts, and the reaping
of abandoned children.

A test that mounts something skips without root or /dev/fuse, except when
NFS_FAILOVER_REQUIRE_LAB=1: there it fails. Every mount and process made here is cleaned
up in ``finally`` blocks; a FUSE daemon is ended with SIGKILL, which is what releases a
child stuck in its filesystem, and its folder is then lazily unmounted.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from nfs_failover.steering.children import RUNNER
from nfs_failover.steering.mountinfo import MountInfo, read_mounts

HUNG_FUSE = Path(__file__).with_name("hung_fuse.py")


def write_mountinfo(tmp_path: Path, text: str) -> Path:
    """A mountinfo file in ``tmp_path`` holding ``text``."""
    path = tmp_path / "mountinfo"
    path.write_bytes(text.encode())
    return path


def nfs_line(mount_id: int, point: str, source: str, fstype: str = "nfs") -> str:
    """A mountinfo line of an NFS mount of ``source`` at ``point``."""
    return (
        f"{mount_id} 25 0:{mount_id} / {point} rw,relatime shared:9 - {fstype} {source} rw,vers=3"
    )


def _unavailable(needs_fuse: bool) -> str | None:
    what = "hung-mount tests" if needs_fuse else "bind-mount tests"
    if os.geteuid() != 0:
        return f"{what} need root (to mount)"
    if shutil.which("umount") is None or shutil.which("mount") is None:
        return f"{what} need mount and umount (util-linux)"
    if not needs_fuse:
        return None
    if not Path("/dev/fuse").exists():
        return "hung-mount tests need /dev/fuse"
    if importlib.util.find_spec("mfusepy") is None or ctypes.util.find_library("fuse3") is None:
        return "hung-mount tests need mfusepy and libfuse3 (Debian fuse3, libfuse3-3)"
    return None


def _require(needs_fuse: bool) -> None:
    reason = _unavailable(needs_fuse)
    if reason is None:
        return
    if os.environ.get("NFS_FAILOVER_REQUIRE_LAB") == "1":
        pytest.fail(f"NFS_FAILOVER_REQUIRE_LAB=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def require_fuse() -> None:
    _require(needs_fuse=True)


def require_root() -> None:
    _require(needs_fuse=False)


def mounted(point: Path) -> MountInfo | None:
    """What this process's mount table has at ``point``."""
    return next((m for m in read_mounts() if m.mount_point == str(point)), None)


def wait_until(condition: Callable[[], object], timeout: float) -> bool:
    """Whether ``condition`` came true within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def lazy_unmount(point: Path) -> None:
    if mounted(point) is not None:
        subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=10, check=False)


def reap_all(timeout: float = 5.0) -> int:
    """Reap abandoned checks until none is left or ``timeout`` passes; how many are left."""
    deadline = time.monotonic() + timeout
    while True:
        RUNNER.reap()
        if RUNNER.abandoned_count() == 0 or time.monotonic() > deadline:
            return RUNNER.abandoned_count()
        time.sleep(0.05)


@contextmanager
def fuse_mount(tmp_path: Path, mode: str) -> Iterator[Path]:
    """A FUSE filesystem (see hung_fuse.py) mounted in a folder of ``tmp_path``."""
    require_fuse()
    point = tmp_path / f"fuse-{mode}"
    point.mkdir()
    log = tmp_path / f"fuse-{mode}.log"
    with log.open("wb") as output:
        daemon = subprocess.Popen(
            [sys.executable, str(HUNG_FUSE), str(point), mode],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
        )
    try:
        if not wait_until(lambda: mounted(point) or daemon.poll() is not None, 10.0):
            pytest.fail(f"FUSE was not mounted within 10 s: {log.read_text()}")
        if mounted(point) is None:
            pytest.fail(f"the FUSE daemon exited: {log.read_text()}")
        yield point
    finally:
        # SIGKILL aborts the FUSE connection, which releases every process stuck in it.
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=10)
        lazy_unmount(point)


@contextmanager
def bind_mount(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """A folder bind-mounted on ``tmp_path/crr``, and a ``sleep`` whose cwd is inside it."""
    require_root()
    source, point = tmp_path / "source", tmp_path / "crr"
    (source / "work").mkdir(parents=True)
    point.mkdir()
    holder = None
    try:
        subprocess.run(["mount", "--bind", str(source), str(point)], check=True, timeout=10)
        holder = subprocess.Popen(["sleep", "60"], cwd=point / "work")
        yield point, holder
    finally:
        if holder is not None:
            holder.kill()
            holder.wait(timeout=10)
        lazy_unmount(point)


def children_running(script: Path) -> list[int]:
    """Pids of this process's children that run ``script``."""
    found = []
    for name in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        if ppid == os.getpid() and str(script).encode() in cmdline:
            found.append(int(name))
    return found


def process_state(pid: int) -> str:
    """The state letter of ``pid`` in /proc (``D``, ``S``, ...), or ``gone``."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return "gone"
