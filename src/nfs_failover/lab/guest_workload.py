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
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

BLOCK = 4096
VERSION_EVERY = 5  # writes between rewrites of the version file
EXIT_PAUSE = 0.2  # seconds before an application that exited is started again
STOP_GRACE = 5.0  # seconds an application has to finish after the stop


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


def emit(record: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


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


def writer(mount: str, prefix: str, start: int, interval: float) -> None:
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


def reader(mount: str, prefix: str, interval: float) -> None:
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


class App:
    """One application the supervisor keeps running, and the operation it is in."""

    def __init__(self, name: str, supervisor: Supervisor) -> None:
        self.name = name
        self.sup = supervisor
        self.process: subprocess.Popen[bytes] | None = None
        self.begun: float | None = None  # when the operation in flight began
        self.next_seq = 1
        self.spare: subprocess.Popen[bytes] | None = None
        self.killed = False  # the last process was killed as hung
        self.lock = threading.Lock()

    def argv(self) -> list[str]:
        me = [sys.executable, "-I", "-S", os.path.abspath(__file__)]
        common = ["--mount", self.sup.args.mount, "--prefix", self.sup.args.prefix]
        interval = self.sup.args.interval * (1 if self.name == "writer" else 2)
        return [*me, self.name, *common, "--interval", str(interval), "--spare"]

    def spawn(self, *, spare: bool) -> subprocess.Popen[bytes]:
        """A process of the application, started and waiting for its go. Python under
        software emulation takes seconds to start, and that is no part of what a client
        sees of a failover, so a restart takes a spare started beforehand: niced while it
        waits, so as not to slow the running ones, and back to full priority at its go."""
        nice = ["nice", "-n", "15"] if spare else []
        return subprocess.Popen(
            [*nice, *self.argv()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )

    def start(self) -> subprocess.Popen[bytes]:
        process = self.spare if self.spare is not None else self.spawn(spare=False)
        self.spare = None  # the next one: after this one's first answer, or when it waits
        if self.killed:
            # Its predecessor hung, so this one likely will too (the server is still dead
            # until the mount moves): its successor cannot wait for an answer to warm.
            self.killed = False
            self.spare = self.spawn(spare=True)
        assert process.stdin is not None
        process.stdin.write(f"go {self.next_seq}\n".encode())
        process.stdin.close()
        self.sup.records.write({"ev": "started", "app": self.name, "pid": process.pid})
        return process

    def serve(self) -> None:
        """Run the application, again and again, until the stop; relay its records."""
        while not self.sup.stopping.is_set():
            with self.lock:
                self.process = process = self.start()
                self.begun = None
            assert process.stdout is not None
            for line in process.stdout:
                self.relay(process.pid, line)
            code = process.wait()
            with self.lock:
                self.begun = None
            self.sup.records.write({"ev": "exit", "app": self.name, "pid": process.pid, "rc": code})
            self.sup.stopping.wait(EXIT_PAUSE)

    def relay(self, pid: int, line: bytes) -> None:
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
        """Start the spare, if there is none: once this process has answered (so that the
        spare's start-up never slows its first operation), or once it has waited half the
        watchdog's limit (on a dead server there is no answer, and a successor started
        only at the kill would start cold, seconds late)."""
        with self.lock:
            if self.spare is None and not self.sup.stopping.is_set():
                self.spare = self.spawn(spare=True)

    def hung_for(self, now: float) -> float:
        with self.lock:
            return now - self.begun if self.begun is not None else 0.0

    def kill(self, why: str) -> None:
        with self.lock:
            process, since = self.process, self.begun
            self.begun = None
            self.killed = True
        if process is None or process.poll() is not None:
            return
        self.sup.records.write(
            {"ev": "hung", "app": self.name, "pid": process.pid, "since": since, "why": why}
        )
        process.kill()  # a hard mount's wait is killable; the exit is seen by serve()
        self.sup.records.write({"ev": "killed", "app": self.name, "pid": process.pid})


class Sqlite(App):
    """``sqlite3`` itself, fed one transaction per row; its ``select`` after the ``COMMIT``
    is the acknowledgement (``-bail`` stops it at the first error, before the select)."""

    def argv(self) -> list[str]:
        database = os.path.join(self.sup.args.mount, database_name(self.sup.args.prefix))
        return ["sqlite3", "-bail", "-batch", database]

    def warm(self) -> None:
        """sqlite3 starts in milliseconds: no spare."""

    def start(self) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            self.argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
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
            time.sleep(0.1)
        self.stop()

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
            if app.spare is not None:
                app.spare.kill()
                app.spare.wait()
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
    for role in ("supervise", "writer", "reader"):
        p = sub.add_parser(role)
        p.add_argument("--mount", required=True)
        p.add_argument("--prefix", required=True)
        p.add_argument("--interval", type=float, default=0.5)
        if role == "supervise":
            p.add_argument("--out", required=True)
            p.add_argument("--mode", choices=("rw", "ro"), default="rw")
            p.add_argument("--hang-after", type=float, default=3.0)
        else:
            p.add_argument("--spare", action="store_true", help="wait for 'go SEQ' on stdin")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        if args.role == "supervise":
            Supervisor(args).run()
            return
        start = 1
        if args.spare:
            go = sys.stdin.readline().split()
            if len(go) != 2 or go[0] != "go":
                return  # the supervisor went away: never started
            start = int(go[1])
            os.setpriority(os.PRIO_PROCESS, 0, 0)
        if args.role == "writer":
            writer(args.mount, args.prefix, start, args.interval)
        else:
            reader(args.mount, args.prefix, args.interval)
    except (KeyboardInterrupt, BrokenPipeError):
        pass


if __name__ == "__main__":
    main()
