"""The drill's applications, run here against a plain folder: real processes, real sqlite3.

In the client hosts the folder is the automounted NFS volume; here a FIFO named like the
writer's next file stands in for a dead server (its open blocks until killed), which is
enough to prove the watchdog: the hung process is killed and a fresh one goes on.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nfs_failover.drill.guests import parse
from nfs_failover.lab import guest_workload as gw

PREFIX = "drill-t-client1-"


def supervise(tmp_path: Path, *extra: str) -> tuple[Path, Path, subprocess.Popen[bytes]]:
    volume, out = tmp_path / "volume", tmp_path / "out"
    volume.mkdir()
    out.mkdir()
    process = subprocess.Popen(
        [
            sys.executable,
            "-I",
            "-S",
            gw.__file__,
            "supervise",
            "--mount",
            str(volume),
            "--prefix",
            PREFIX,
            "--out",
            str(out),
            "--interval",
            "0.05",
            *extra,
        ],
    )
    return volume, out, process


def records(out: Path) -> list[dict[str, object]]:
    path = out / "records.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def wait_for(out: Path, condition: object, timeout: float = 30.0) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = records(out)
        if callable(condition) and condition(found):
            return found
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s; records: {records(out)[-10:]}")


def stop(out: Path, process: subprocess.Popen[bytes]) -> list[dict[str, object]]:
    (out / "stop").touch()
    assert process.wait(timeout=30) == 0
    return records(out)


def acked(lines: list[dict[str, object]], op: str) -> list[dict[str, object]]:
    return [r for r in lines if r["ev"] == "end" and r["op"] == op and r["ok"]]


@pytest.fixture(autouse=True)
def _sqlite3_present() -> None:
    assert shutil.which("sqlite3"), "the drill's application needs sqlite3: run scripts/setup"


def test_what_the_applications_acknowledge_is_on_the_volume(tmp_path: Path) -> None:
    volume, out, process = supervise(tmp_path)
    wait_for(out, lambda r: len(acked(r, "write")) >= 6 and len(acked(r, "row")) >= 3)
    lines = stop(out, process)

    for write in acked(lines, "write"):
        seq = int(write["seq"])  # type: ignore[call-overload]
        assert (volume / gw.file_name(PREFIX, seq)).read_bytes() == gw.content(PREFIX, seq)
    with sqlite3.connect(volume / gw.database_name(PREFIX)) as db:
        rows = {seq for (seq,) in db.execute("select seq from rows")}
    db.close()
    assert {int(r["seq"]) for r in acked(lines, "row")} <= rows  # type: ignore[call-overload]
    version = int((volume / gw.version_name(PREFIX)).read_text())
    assert version in {int(r["seq"]) for r in acked(lines, "version")}  # type: ignore[call-overload]
    # Each operation says which mount it went to (here the test's own filesystem).
    assert all(r.get("mnt") is not None for r in acked(lines, "write"))
    # A read may race the writer and find its newest file still being written; what it
    # must never do is find a file short whose write was acknowledged before it began.
    ops = parse("client1", lines, lambda t: t).ops
    done = {op.seq: op.end for op in ops if op.kind == "write" and op.ok and op.end}
    reads = [op for op in ops if op.kind == "read" and op.ok]
    assert reads and any(op.seen.get("intact") is True for op in reads)
    for op in reads:
        if op.seen.get("intact") is False:
            end = done.get(op.seen["checked"])  # type: ignore[call-overload]
            assert end is None or end >= op.begin, op
    assert lines[-1]["ev"] == "stopped"
    # No process is left: not an application, a spare, nor the zygote they were forked
    # from (which leaves once the supervisor has gone).
    deadline = time.monotonic() + 10
    while ours := [p for p in os.listdir("/proc") if p.isdigit() and _is_ours(p, str(volume))]:
        assert time.monotonic() < deadline, f"left running: {ours}"
        time.sleep(0.05)


def test_a_hung_application_is_killed_and_a_fresh_one_goes_on(tmp_path: Path) -> None:
    volume, out, process = supervise(tmp_path, "--hang-after", "1")
    # The version file's temporary name is a FIFO: opening it for writing blocks, like a
    # write on a dead server, until the process is killed.
    fifo = volume / (gw.version_name(PREFIX) + ".tmp")
    os.mkfifo(fifo)
    try:
        wait_for(out, lambda r: any(x["ev"] == "hung" for x in r))
        fifo.unlink()
        lines = wait_for(out, lambda r: any(w["seq"] == 10 for w in acked(r, "version")))
    finally:
        lines = stop(out, process)

    hung = [r for r in lines if r["ev"] == "hung"]
    assert [r["app"] for r in hung] == ["writer"]
    # Its successor was forked and ready before the hang: the applications were warm.
    assert any(r["ev"] == "warm" and r["warm"] for r in lines[: lines.index(hung[0])])
    assert [r["app"] for r in lines if r["ev"] == "killed"] == ["writer"]
    parsed = parse("client1", lines, lambda t: t)
    (stuck,) = [op for op in parsed.ops if op.kind == "version" and op.seq == 5]
    assert stuck.ok is False and stuck.end is None and stuck.error == "killed"
    (hang,) = parsed.hangs
    assert hang.app == "writer" and hang.killed - hang.since >= 1.0
    # The fresh writer took up at the next file, not the one it hung on.
    assert {1, 2, 3, 4, 5, 6} <= {op.seq for op in parsed.ops if op.kind == "write" and op.ok}
    assert int((volume / gw.version_name(PREFIX)).read_text()) >= 10


def test_the_version_file_is_replaced_whole(tmp_path: Path) -> None:
    volume, out, process = supervise(tmp_path)
    wait_for(out, lambda r: len(acked(r, "version")) >= 2)
    lines = stop(out, process)
    # Readers only ever saw a whole number: the file is renamed over, never truncated.
    seen = [r["version"] for r in acked(lines, "read") if "version" in r]
    assert seen and all(isinstance(v, int) and v > 0 for v in seen)
    assert not (volume / (gw.version_name(PREFIX) + ".tmp")).exists()


def _is_ours(pid: str, volume: str) -> bool:
    try:
        return volume in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def test_a_process_waited_on_can_still_be_killed(tmp_path: Path) -> None:
    # A process slow to exit is waited on by one thread while the watchdog kills it from
    # another: the kill must not wait for the wait.
    records_r, records_w = os.pipe()
    go_r, go_w = os.pipe()
    child = subprocess.Popen(["sleep", "60"])
    forked = gw.Forked(child.pid, records=records_r, go=go_w)
    outcome: list[object] = []
    waiting = threading.Event()

    def wait() -> None:
        waiting.set()
        try:
            outcome.append(forked.wait(timeout=30))
        except subprocess.TimeoutExpired as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    try:
        waiting.wait(5)
        forked.kill()
        waiter.join(40)
        assert outcome == [None], "the wait ended by its timeout, not by the kill"
        assert forked.poll() == 0
        assert child.wait(5) == -9
    finally:
        child.kill()
        child.wait()
        forked.records.close()
        for fd in (records_w, go_r, go_w):
            with contextlib.suppress(OSError):
                os.close(fd)
