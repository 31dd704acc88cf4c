"""The drill's applications in a client host: real programs working through the mount.

Run in the guest by the drill (``python3 -I -S guest_workload.py supervise ...``), it
starts three applications and looks after them as a service manager with a watchdog
would:

- a *writer* (this file, ``writer``): creates a file, writes it, ``fsync``s it, and counts
  the write as acknowledged only when ``fsync`` returned; every fifth write also rewrites
  a version file, whose content a later read must not be older than;
- a *reader* (``reader``): lists the folder, reads the version file and the newest file
  back, and says what it saw;
- ``sqlite3``, Debian's own program, inserting rows in a database on the volume, one
  transaction per row; a row counts as acknowledged when its ``COMMIT`` returned.

Each application reports every operation's begin and end on its stdout, with the mount
(``mnt_id`` from ``/proc/self/fdinfo``, so that finding it never asks the server) and that
mount's server. The supervisor writes all of it, with its own events (an application
hung, killed, restarted; the mount at the key changed), as JSON lines to ``records.jsonl``
in a folder shared with the host, outside the volume. An operation that has not returned
after ``--hang-after`` seconds is a hung process: it is killed (NFS waits are killable)
and a fresh one started, which reaches the volume through the automount again.

Standard library only, and never importing the package: it runs under the guest's
``python3`` from a read-only view of the host.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

BLOCK = 4096
VERSION_EVERY = 5  # writes between rewrites of the version file
EXIT_PAUSE = 0.2  # seconds before an application that exited is started again
STOP_GRACE = 5.0  # seconds an application has to finish after the stop
# Spare processes kept per application: a failover usually hangs two in a row (the one on
# the dead server, then its successor until the mount moves).
SPARES = 2


def content(prefix: str, seq: int) -> bytes:
    """The bytes of write ``seq``: anyone can check a file against it (shared with the host)."""
    line = f"{prefix}w{seq:06d}\n".encode()
    return (line * (BLOCK // len(line) + 1))[:BLOCK]


def file_name(prefix: str, seq: int) -> str:
    return f"{prefix}w{seq:06d}"


def version_name(prefix: str) -> str:
    return f"{prefix}version"


def database_name(prefix: str) -> str:
    return f"{prefix}rows.db"


# -- where an open file lives ------------------------------------------------------------


def mount_sources() -> dict[int, str]:
    """Mount id -> source (``host:/path``), from this process's mount table."""
    found = {}
    with open("/proc/self/mountinfo", "rb") as table:
        for line in table.read().decode(errors="replace").splitlines():
            fields = line.split()
            if " - " not in line or len(fields) < 5:
                continue
            after = line.split(" - ", 1)[1].split()
            found[int(fields[0])] = after[1] if len(after) > 1 else "?"
    return found


def mount_of(fd: int, pid: int | str = "self") -> int | None:
    """The mount id an open file is on; read from fdinfo, so it never asks the server."""
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}", "rb") as info:
            for line in info.read().decode().splitlines():
                if line.startswith("mnt_id:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def where(fd: int, pid: int | str = "self") -> dict[str, object]:
    mount = mount_of(fd, pid)
    return {"mnt": mount, "server": mount_sources().get(mount) if mount is not None else None}


def mounted_at(point: str) -> tuple[int, str] | None:
    """(mount id, source) of the NFS mount at ``point`` now, if any."""
    with open("/proc/self/mountinfo", "rb") as table:
        for line in table.read().decode(errors="replace").splitlines():
            fields = line.split()
            if len(fields) > 4 and fields[4] == point and " - nfs" in line:
                return int(fields[0]), line.split(" - ", 1)[1].split()[1]
    return None


# -- the applications ----------------------------------------------------------------------


Emit = Callable[[dict[str, object]], None]


def _error(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc.errno)) if exc.errno else str(exc)


def _write_file(path: str, data: bytes, *, replace: bool = False) -> dict[str, object]:
    """Write, fsync, close; ``replace`` writes a temporary file renamed over ``path``, as
    an application replaces a file so that no reader sees it half written."""
    target = path + ".tmp" if replace else path
    fd = os.open(target, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    try:
        at = where(fd)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    if replace:
        os.rename(target, path)  # an NFS RENAME is committed by the server before it answers
    return at


def writer(mount: str, prefix: str, start: int, interval: float, emit: Emit) -> None:
    """Writes ``prefix``w<seq> files from ``start`` on, forever; see the module docstring."""
    seq = start
    while True:
        for kind, name, data in _writes(prefix, seq):
            emit({"ev": "begin", "op": kind, "seq": seq, "t": time.time()})
            try:
                at = _write_file(os.path.join(mount, name), data, replace=kind == "version")
            except OSError as exc:
                emit(
                    {
                        "ev": "end",
                        "op": kind,
                        "seq": seq,
                        "ok": False,
                        "err": _error(exc),
                        "t": time.time(),
                    }
                )
                time.sleep(interval)
                continue
            emit({"ev": "end", "op": kind, "seq": seq, "ok": True, **at, "t": time.time()})
        seq += 1
        time.sleep(interval)


def _writes(prefix: str, seq: int) -> list[tuple[str, str, bytes]]:
    writes = [("write", file_name(prefix, seq), content(prefix, seq))]
    if seq % VERSION_EVERY == 0:
        writes.append(("version", version_name(prefix), f"{seq}\n".encode()))
    return writes


def reader(mount: str, prefix: str, interval: float, emit: Emit) -> None:
    """Lists the folder and reads the version file and the newest file back, forever."""
    while True:
        emit({"ev": "begin", "op": "read", "t": time.time()})
        try:
            emit(
                {
                    "ev": "end",
                    "op": "read",
                    "ok": True,
                    **_read_once(mount, prefix),
                    "t": time.time(),
                }
            )
        except OSError as exc:
            emit({"ev": "end", "op": "read", "ok": False, "err": _error(exc), "t": time.time()})
        time.sleep(interval)


def _read_once(mount: str, prefix: str) -> dict[str, object]:
    fd = os.open(mount, os.O_RDONLY | os.O_DIRECTORY)
    try:
        at = where(fd)
        names = os.listdir(fd)
    finally:
        os.close(fd)
    seqs = sorted(
        int(n[len(prefix) + 1 :])
        for n in names
        if n.startswith(prefix + "w") and n[len(prefix) + 1 :].isdigit()
    )
    seen: dict[str, object] = {**at, "seqs": _ranges(seqs)}
    version = _read(os.path.join(mount, version_name(prefix)))
    if version is not None:
        seen["version"] = int(version.strip() or b"0")
    if seqs:
        newest = _read(os.path.join(mount, file_name(prefix, seqs[-1])))
        seen["checked"] = seqs[-1]
        seen["intact"] = newest == content(prefix, seqs[-1])
    return seen


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _ranges(seqs: list[int]) -> list[list[int]]:
    """[1, 2, 3, 7, 8] -> [[1, 3], [7, 8]]: a listing of thousands of files stays short."""
    ranges: list[list[int]] = []
    for seq in seqs:
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1][1] = seq
        else:
            ranges.append([seq, seq])
    return ranges


# -- the supervisor ------------------------------------------------------------------------


class Records:
    """records.jsonl, written by one lock: lines never interleave."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "a", buffering=1)  # noqa: SIM115 - open for the run
        self._lock = threading.Lock()

    def write(self, record: dict[str, object]) -> None:
        record.setdefault("t", time.time())
        with self._lock:
            self._file.write(json.dumps(record) + "\n")


@dataclass(frozen=True)
class Job:
    """What a forked application runs (sent to the fork server, so it is picklable)."""

    role: str  # writer or reader
    mount: str
    prefix: str
    interval: float


class Zygote:
    """A fork of the supervisor, made before it starts any thread, that forks the
    applications' processes on request.

    Under software emulation an interpreter's start costs seconds of CPU (its imports are
    read through the guest's view of the host) and multiprocessing's fork server half a
    second a process (pickling, preparing the child), while a real application's
    successor starts in milliseconds: that start is no part of what a client sees of a
    failover. A plain fork costs some 15 ms there. The zygote is single-threaded, so
    forking it is safe, where forking the threaded supervisor is not; its children are
    reaped by the kernel (SIGCHLD ignored), so the supervisor follows each one through a
    pidfd, and their exit status is not known."""

    def __init__(self) -> None:
        self._socket, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._lock = threading.Lock()
        pid = os.fork()
        if pid == 0:
            self._socket.close()
            _zygote(theirs)
        theirs.close()

    def fork(self, job: Job) -> Forked:
        with self._lock:
            self._socket.sendall(json.dumps(asdict(job)).encode())
            answer, fds, _, _ = socket.recv_fds(self._socket, 64, 2)
        if len(fds) != 2:
            raise OSError(f"the zygote did not fork {job.role}: {answer!r}")
        return Forked(int(answer), records=fds[0], go=fds[1])


def _zygote(requests: socket.socket) -> None:
    """The zygote's loop: a process for each request, until the supervisor goes away."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        while request := requests.recv(4096):
            job = Job(**json.loads(request))
            records, sink = os.pipe()
            start, go = os.pipe()
            pid = os.fork()
            if pid == 0:
                requests.close()
                os.close(records)
                os.close(go)
                _run_job(job, start, sink)
            os.close(sink)
            os.close(start)
            socket.send_fds(requests, [str(pid).encode()], [records, go])
            os.close(records)
            os.close(go)
    finally:
        os._exit(0)


def _run_job(job: Job, start: int, sink: int) -> None:
    """A forked application's body: ready, its go, then its records to ``sink``, one JSON
    line each. It leaves by ``os._exit``, so that nothing the supervisor had buffered is
    written twice."""
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))

    def emit(record: dict[str, object]) -> None:
        data = memoryview((json.dumps(record) + "\n").encode())
        while data:
            data = data[os.write(sink, data) :]

    with contextlib.suppress(OSError, ValueError):
        emit({"ev": "ready", "t": time.time()})
        with open(start, "rb") as go_file:
            go = go_file.readline().split()  # EOF: the supervisor went away
        if len(go) == 2 and go[0] == b"go":
            if job.role == "writer":
                writer(job.mount, job.prefix, int(go[1]), job.interval, emit)
            else:
                reader(job.mount, job.prefix, job.interval, emit)
    os._exit(0)


class Forked:
    """One forked process of an application, waiting for its ``go``, with the calls of
    ``subprocess.Popen`` the supervisor uses (``wait`` cannot say how it ended: that is
    the zygote's to know)."""

    def __init__(self, pid: int, *, records: int, go: int) -> None:
        self.pid = pid
        self._pidfd = os.pidfd_open(pid)  # it waits for its go: it is alive
        self.records = open(records, "rb")  # noqa: SIM115 - read for its life
        self._go = go
        self._ready = False
        self._lock = threading.Lock()  # the first record is read by whoever asks first

    def ready(self) -> bool:
        """Whether it has said it is ready (its first record), without waiting."""
        with self._lock:
            if not self._ready and select.select([self.records], [], [], 0)[0]:
                self._ready = bool(self.records.readline())
            return self._ready

    def go(self, seq: int) -> None:
        with contextlib.suppress(OSError):
            os.write(self._go, f"go {seq}\n".encode())
        os.close(self._go)

    def lines(self) -> Iterator[bytes]:
        """Its records after its "ready", until it exits."""
        with self._lock:
            if not self._ready and not self.records.readline():
                return
            self._ready = True
        yield from self.records
        self.records.close()

    def poll(self) -> int | None:
        """None while it runs; then 0, whatever its status was."""
        with self._lock:
            if self._pidfd >= 0 and select.select([self._pidfd], [], [], 0)[0]:
                self._close()
            return 0 if self._pidfd < 0 else None

    def wait(self, timeout: float | None = None) -> int | None:
        """None once it has ended (how, the zygote knows). It waits on a copy of the pidfd,
        outside the lock: a process slow to exit never holds up ``poll`` or ``kill``."""
        with self._lock:
            if self._pidfd < 0:
                return None
            pidfd = os.dup(self._pidfd)
        try:
            if not select.select([pidfd], [], [], timeout)[0]:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0)
        finally:
            os.close(pidfd)
        with self._lock:
            self._close()
        return None

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def _signal(self, number: int) -> None:
        with self._lock, contextlib.suppress(OSError):
            if self._pidfd >= 0:  # a pidfd, not a pid: never a process that took its number
                signal.pidfd_send_signal(self._pidfd, number)

    def _close(self) -> None:
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1


class App:
    """One application the supervisor keeps running, and the operation it is in."""

    def __init__(self, name: str, supervisor: Supervisor) -> None:
        self.name = name
        self.sup = supervisor
        self.process: Forked | subprocess.Popen[bytes] | None = None
        self.begun: float | None = None  # when the operation in flight began
        self.next_seq = 1
        self.spares: list[Forked] = []
        self.killed = False  # the last process was killed as hung
        self.lock = threading.Lock()

    def fork(self) -> Forked:
        args = self.sup.args
        interval = args.interval * (1 if self.name == "writer" else 2)
        return self.sup.zygote.fork(Job(self.name, args.mount, args.prefix, interval))

    def start(self) -> Forked:
        process = self.spares.pop(0) if self.spares else self.fork()
        process.go(self.next_seq)
        # The next ones: after this one's first answer, or when it waits. But if its
        # predecessor hung, this one likely will too (the server is still dead until the
        # mount moves): its successors cannot wait for an answer to warm.
        if self.killed:
            self.killed = False
            self.top_up()
        self.sup.records.write({"ev": "started", "app": self.name, "pid": process.pid})
        return process

    def serve(self) -> None:
        """Run the application, again and again, until the stop; relay its records."""
        while not self.sup.stopping.is_set():
            with self.lock:
                self.process = process = self.start()
                self.begun = None
            for line in process.lines():
                self.relay(process.pid, line)
            code = process.wait()
            with self.lock:
                self.begun = None
            self.sup.records.write({"ev": "exit", "app": self.name, "pid": process.pid, "rc": code})
            self.sup.stopping.wait(EXIT_PAUSE)

    def relay(self, pid: int | None, line: bytes) -> None:
        try:
            record = json.loads(line)
        except ValueError:
            return
        with self.lock:
            self.begun = record["t"] if record.get("ev") == "begin" else None
            if record.get("ev") == "end" and record.get("ok") and record.get("op") == "write":
                self.next_seq = int(record["seq"]) + 1
            elif record.get("ev") == "begin" and record.get("op") == "write":
                self.next_seq = max(self.next_seq, int(record["seq"]) + 1)
        self.sup.records.write({**record, "app": self.name, "pid": pid})
        if record.get("ev") == "end":
            self.warm()

    def warm(self) -> None:
        """Fork the spares that are missing: once this process has answered (so that their
        start never slows its first operation), or once it has waited half the watchdog's
        limit (on a dead server there is no answer, and a successor forked only at the
        kill would be late)."""
        with self.lock:
            self.top_up()

    def top_up(self) -> None:
        while len(self.spares) < SPARES and not self.sup.stopping.is_set():
            self.spares.append(self.fork())

    def warmed(self) -> bool:
        """Whether all its spares are ready: a hang now costs no start."""
        with self.lock:
            spares = list(self.spares)
        return len(spares) >= SPARES and all(spare.ready() for spare in spares)

    def hung_for(self, now: float) -> float:
        with self.lock:
            return now - self.begun if self.begun is not None else 0.0

    def kill(self, why: str) -> None:
        with self.lock:
            process, since = self.process, self.begun
            self.begun = None
            if process is None or process.poll() is not None:
                return
            self.killed = True
        self.sup.records.write(
            {"ev": "hung", "app": self.name, "pid": process.pid, "since": since, "why": why}
        )
        process.kill()  # a hard mount's wait is killable; the exit is seen by serve()
        self.sup.records.write({"ev": "killed", "app": self.name, "pid": process.pid})


class Sqlite(App):
    """``sqlite3`` itself, fed one transaction per row; its ``select`` after the ``COMMIT``
    is the acknowledgement (``-bail`` stops it at the first error, before the select)."""

    def warm(self) -> None:
        """sqlite3 starts in milliseconds: no spare."""

    def warmed(self) -> bool:
        return True

    def start(self) -> subprocess.Popen[bytes]:  # type: ignore[override]
        database = os.path.join(self.sup.args.mount, database_name(self.sup.args.prefix))
        process = subprocess.Popen(
            ["sqlite3", "-bail", "-batch", database],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.sup.records.write({"ev": "started", "app": self.name, "pid": process.pid})
        return process

    def serve(self) -> None:
        while not self.sup.stopping.is_set():
            with self.lock:
                self.process = process = self.start()
                self.begun = None
            self.feed(process)
            code = process.wait()
            assert process.stderr is not None
            error = process.stderr.read().decode(errors="replace").strip()
            with self.lock:
                self.begun = None
            self.sup.records.write(
                {
                    "ev": "exit",
                    "app": self.name,
                    "pid": process.pid,
                    "rc": code,
                    "err": error[-300:],
                }
            )
            self.sup.stopping.wait(EXIT_PAUSE)

    def feed(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdin is not None and process.stdout is not None
        first = True
        while not self.sup.stopping.is_set():
            seq = self.next_seq
            sql = f"BEGIN; INSERT INTO rows(seq, value) VALUES({seq}, 'row {seq}'); COMMIT; "
            if first:  # the table, once per process (a rollback of it rolls it back too)
                sql = "CREATE TABLE IF NOT EXISTS rows(seq INTEGER PRIMARY KEY, value TEXT); " + sql
            with self.lock:
                self.begun = time.time()
            self.sup.records.write(
                {
                    "ev": "begin",
                    "app": self.name,
                    "op": "row",
                    "seq": seq,
                    "pid": process.pid,
                    "t": self.begun,
                }
            )
            try:
                process.stdin.write(f"{sql}SELECT 'ack', {seq};\n".encode())
                process.stdin.flush()
                line = process.stdout.readline()
            except OSError:
                line = b""
            ok = line.strip() == f"ack|{seq}".encode()
            fd = self._database_fd(process.pid) if ok else None
            at = where(fd, process.pid) if fd is not None else {"mnt": None, "server": None}
            with self.lock:
                self.begun = None
                if ok:
                    self.next_seq = seq + 1
            self.sup.records.write(
                {
                    "ev": "end",
                    "app": self.name,
                    "op": "row",
                    "seq": seq,
                    "ok": ok,
                    "pid": process.pid,
                    **at,
                }
            )
            if not ok:
                return
            first = False
            self.sup.stopping.wait(self.sup.args.interval)
        with contextlib.suppress(OSError):
            process.stdin.close()

    def _database_fd(self, pid: int) -> int | None:
        """The database's descriptor in sqlite3, found through /proc without touching the
        file (readlink names it; it does not stat it)."""
        name = database_name(self.sup.args.prefix)
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}").endswith("/" + name):
                    return int(fd)
        return None


class Supervisor:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out)
        self.records = Records(self.out / "records.jsonl")
        self.stopping = threading.Event()
        names = ["reader"] if args.mode == "ro" else ["writer", "reader", "sqlite"]
        self.apps = [Sqlite(n, self) if n == "sqlite" else App(n, self) for n in names]
        self.zygote = Zygote()  # now, before any thread
        self.warm: bool | None = None

    def run(self) -> None:
        self.records.write(
            {
                "ev": "supervisor",
                "pid": os.getpid(),
                "mount": self.args.mount,
                "hang_after": self.args.hang_after,
            }
        )
        threads = [threading.Thread(target=app.serve, daemon=True) for app in self.apps]
        threads.append(threading.Thread(target=self.watch_mount, daemon=True))
        for thread in threads:
            thread.start()
        stop_file = self.out / "stop"
        while not stop_file.exists():
            now = time.time()
            for app in self.apps:
                waited = app.hung_for(now)
                if waited > self.args.hang_after:
                    app.kill(f"no answer in {self.args.hang_after:g}s")
                elif waited > self.args.hang_after / 2:
                    app.warm()
            self.note_warmth()
            time.sleep(0.1)
        self.stop()

    def note_warmth(self) -> None:
        """Record when every application has its spares ready ("warm": the steady state a
        failover is measured from), and when that stops being so."""
        warm = all(app.warmed() for app in self.apps)
        if warm != self.warm:
            self.warm = warm
            self.records.write({"ev": "warm", "warm": warm})

    def stop(self) -> None:
        self.stopping.set()
        for app in self.apps:
            if app.process is not None and app.process.poll() is None:
                app.process.terminate()
        deadline = time.time() + STOP_GRACE
        for app in self.apps:
            process = app.process
            if process is None:
                continue
            try:
                process.wait(timeout=max(deadline - time.time(), 0.1))
            except subprocess.TimeoutExpired:
                app.kill("still running at the stop")
        for app in self.apps:
            for spare in app.spares:
                spare.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    spare.wait(STOP_GRACE)
        self.records.write({"ev": "stopped"})

    def watch_mount(self) -> None:
        """Record each change of the mount at the key: what automount mounted, and when."""
        last: tuple[int, str] | None = None
        while not self.stopping.is_set():
            now = mounted_at(self.args.mount)
            if now != last:
                self.records.write(
                    {
                        "ev": "mount",
                        "mnt": now[0] if now else None,
                        "server": now[1] if now else None,
                    }
                )
                last = now
            self.stopping.wait(0.2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="guest_workload")
    sub = parser.add_subparsers(dest="role", required=True)
    p = sub.add_parser("supervise")
    p.add_argument("--mount", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--interval", type=float, default=0.5)
    p.add_argument("--out", required=True)
    p.add_argument("--mode", choices=("rw", "ro"), default="rw")
    p.add_argument("--hang-after", type=float, default=3.0)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt):
        Supervisor(args).run()


if __name__ == "__main__":
    main()
