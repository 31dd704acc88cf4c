"""Short-lived child processes bounded by a deadline, and the reaper of those given up on.

Owns running a program (the mount check, the holders scan, ``umount``) until it ends or
its deadline passes, the children abandoned at their deadline until they are reaped, the
checks among them stuck in a mount, and one gate per mount so that one check of it runs at
a time.

Why a child process, and why abandon it: a ``statvfs`` on a hard NFS mount of a dead
server does not return, and SIGKILL may not end the caller either: a FUSE request already
read by its daemon leaves a killed caller in state D until the daemon answers or dies
(seen in tests/steering), and an NFS client has waits of the same kind. A thread doing
that check could never be stopped, and ``subprocess.run(timeout=)`` or ``communicate()``
would kill the child and then *wait* for it, hanging the agent with it. So each check is
a short-lived child process that the agent polls against a deadline; at the deadline it
is SIGKILLed and abandoned, never waited for. Abandoned children are reaped later with
``waitpid(WNOHANG)`` (``ChildRunner.reap``, also run at every check), and while one is
alive no other check of the same mount is started: the mount is reported hung at once,
so a dead server costs one stuck process per mount, not one per cycle.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from nfs_failover.durations import format_duration
from nfs_failover.pacing import Deadline
from nfs_failover.steering.machine import Ran

__all__ = [
    "CHILD",
    "CHILD_ARGV",
    "MAX_OUTPUT_BYTES",
    "RUNNER",
    "ChildRunner",
    "MountKey",
    "seconds_text",
]

MAX_OUTPUT_BYTES = 4 * 1024 * 1024  # kept of a child's stdout or stderr
CHILD = Path(__file__).with_name("mount_check_child.py")
CHILD_ARGV = (sys.executable, "-I", "-S", str(CHILD))  # isolated: stdlib only, no site

# A mount as the checks know it: its path and its mount id. After a lazy unmount autofs
# mounts the same path anew, and a check stuck in the old mount must not stand for the new.
MountKey = tuple[str, int]


def seconds_text(seconds: float) -> str:
    """A deadline or an age as the sentences say it: ``1s``, ``500ms``."""
    return format_duration(timedelta(seconds=round(seconds, 4)))


@dataclass
class _Gate:
    lock: threading.Lock
    users: int = 0  # callers holding or waiting for the lock; the gate goes at zero


@dataclass
class _Abandoned:
    process: subprocess.Popen[bytes]
    mount: MountKey | None  # the mount of a check; None for another program
    since: float


class ChildRunner:
    """Runs bounded children, and keeps those it gave up on until they are reaped.

    ``waitpid`` is process-wide: one runner per process (``RUNNER``) sees every child it
    abandoned, so every caller uses that one. Its methods are safe to call from any
    thread; none blocks past the deadline it is given (``gate`` hands out a lock that the
    caller acquires with its own deadline).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._abandoned: dict[int, _Abandoned] = {}  # pid -> the child given up on
        self._stuck: dict[MountKey, int] = {}  # mount -> pid of its stuck check
        self._gates: dict[MountKey, _Gate] = {}  # mount -> one check at a time

    def run(self, argv: Sequence[str], timeout: float, mount: MountKey | None = None) -> Ran:
        """Run ``argv`` until it ends or ``timeout`` passes; at the deadline SIGKILL it and
        abandon it to the reaper (as the stuck check of ``mount``, when given). Never
        blocks past the deadline; raises OSError if ``argv`` cannot be started."""
        deadline = Deadline(timeout)
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd="/",  # never inherit a working directory inside a mount
        )
        assert process.stdout is not None and process.stderr is not None
        output = _read_until_closed(process, deadline)
        if not _wait_for_exit(process, deadline):
            self._abandon(process, mount)
            return Ran(None, "", "", process.pid)
        out, err = output[process.stdout.fileno()], output[process.stderr.fileno()]
        process.stdout.close()
        process.stderr.close()
        return Ran(process.returncode, os.fsdecode(out), os.fsdecode(err), process.pid)

    def reap(self) -> list[int]:
        """Reap the abandoned children that have ended (``waitpid`` with WNOHANG); their
        pids."""
        reaped = []
        with self._lock:
            for pid, child in list(self._abandoned.items()):
                try:
                    ended, status = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:  # reaped by someone else: gone all the same
                    ended, status = pid, 0
                if ended == 0:
                    continue
                child.process.returncode = os.waitstatus_to_exitcode(status)
                del self._abandoned[pid]
                if child.mount is not None and self._stuck.get(child.mount) == pid:
                    del self._stuck[child.mount]
                reaped.append(pid)
        return reaped

    def abandoned_count(self) -> int:
        """How many children were given up on and have not been reaped yet."""
        with self._lock:
            return len(self._abandoned)

    def stuck(self, mount: MountKey) -> tuple[int, float] | None:
        """The pid of the check of ``mount`` still stuck since it was abandoned, and when
        (``time.monotonic``) that was; None when no check of it is stuck."""
        with self._lock:
            pid = self._stuck.get(mount)
            return None if pid is None else (pid, self._abandoned[pid].since)

    @contextlib.contextmanager
    def gate(self, mount: MountKey) -> Iterator[threading.Lock]:
        """The lock that lets one check of ``mount`` run at a time (not yet acquired)."""
        with self._lock:
            gate = self._gates.setdefault(mount, _Gate(threading.Lock()))
            gate.users += 1
        try:
            yield gate.lock
        finally:
            with self._lock:
                gate.users -= 1
                if gate.users == 0:
                    del self._gates[mount]

    def _abandon(self, process: subprocess.Popen[bytes], mount: MountKey | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
        with self._lock:
            self._abandoned[process.pid] = _Abandoned(process, mount, time.monotonic())
            if mount is not None:
                self._stuck[mount] = process.pid


RUNNER = ChildRunner()
"""The runner of this process: every bounded child is started and reaped through it."""


def _wait_for_exit(process: subprocess.Popen[bytes], deadline: Deadline) -> bool:
    """Whether ``process`` ended (and was reaped) by ``deadline``; never waits past it."""
    try:
        pidfd = os.pidfd_open(process.pid)
    except OSError:
        pidfd = -1
    try:
        if pidfd >= 0:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            remaining = deadline.left()
            if remaining > 0 and poller.poll(remaining * 1000) and process.poll() is not None:
                return True
        # Without a pidfd (an old kernel): poll with short sleeps, bounded by the deadline.
        while process.poll() is None:
            remaining = deadline.left()
            if remaining <= 0:
                return False
            time.sleep(min(remaining, 0.01))
        return True
    finally:
        if pidfd >= 0:
            os.close(pidfd)


def _read_until_closed(process: subprocess.Popen[bytes], deadline: Deadline) -> dict[int, bytes]:
    """The child's stdout and stderr (by fd), read as they come, so that a child with much
    to say never blocks on a full pipe; until both close or the deadline passes."""
    assert process.stdout is not None and process.stderr is not None
    output = {pipe.fileno(): bytearray() for pipe in (process.stdout, process.stderr)}
    poller = select.poll()
    for fd in output:
        poller.register(fd, select.POLLIN)
    open_fds = set(output)
    while open_fds:
        remaining = deadline.left()
        if remaining <= 0:
            break
        for fd, _ in poller.poll(remaining * 1000):
            chunk = os.read(fd, 65536)
            if not chunk:
                poller.unregister(fd)
                open_fds.discard(fd)
            elif len(output[fd]) < MAX_OUTPUT_BYTES:  # beyond it, read and drop
                output[fd] += chunk[: MAX_OUTPUT_BYTES - len(output[fd])]
    return {fd: bytes(data) for fd, data in output.items()}
