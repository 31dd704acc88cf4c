"""The drill's applications in the client hosts, from the host: start, clock, records, stop.

Each client host runs ``lab.guest_workload`` (a writer, a reader and ``sqlite3`` working
through the automounted volume, under a watchdog). Its records come back through the
client's shared folder; this module reads them as they grow, puts them on the host's
clock (the guest's clock is measured against it, at the start and at the end), and pairs
each operation's begin with its end.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from nfs_failover.errors import NfsFailoverError
from nfs_failover.lab import guest_workload
from nfs_failover.lab.clients import ClientHost, exec_in
from nfs_failover.pacing import Deadline, Pacer

CLOCK_SAMPLES = 5
STOP_TIMEOUT = 15.0  # seconds for the applications to stop and say so


class GuestWorkloadError(NfsFailoverError):
    """The applications in a client host could not be started, or did not stop."""


@dataclass(frozen=True)
class Op:
    """One operation of one application, on the host's clock (epoch seconds)."""

    client: str
    app: str  # "writer", "reader", "sqlite"
    kind: str  # "write", "version", "read", "row"
    seq: int | None
    begin: float
    end: float | None  # None: never returned (killed, or still in flight at the stop)
    ok: bool
    server: str | None  # HOST:/PATH of the mount it went to, when known
    error: str | None = None
    seen: dict[str, object] = field(default_factory=dict)  # what a read saw


@dataclass(frozen=True)
class Hang:
    client: str
    app: str
    since: float  # the operation that hung began
    killed: float


@dataclass(frozen=True)
class MountChange:
    client: str
    at: float
    server: str | None  # None: nothing mounted at the key


@dataclass
class Records:
    ops: list[Op] = field(default_factory=list)
    hangs: list[Hang] = field(default_factory=list)
    mounts: list[MountChange] = field(default_factory=list)
    stopped: bool = False
    warm: bool = False  # every application's spare processes are ready


class GuestWorkload:
    """The applications of one client host for one drill."""

    def __init__(
        self,
        client: ClientHost,
        key: PurePosixPath,
        run_id: str,
        *,
        read_only: bool,
        hang_after: float,
    ) -> None:
        self.client = client
        self.key = key
        self.prefix = f"drill-{run_id}-{client.name}-"
        self.read_only = read_only
        self.hang_after = hang_after
        self.folder = client.folder / "drill" / run_id
        self.offset = 0.0  # guest clock minus host clock, seconds
        self._offset_end: float | None = None
        self._measured_end = 0.0  # when the clock was measured again, at the stop
        self._started_at = 0.0
        self._position = 0
        self._pending = b""
        self._lines: list[dict[str, object]] = []
        self._parsed: Records | None = None

    @property
    def records_file(self) -> Path:
        return self.folder / "records.jsonl"

    async def start(self) -> None:
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, mode=0o700)
        self.offset = await self.measure_clock()
        self._started_at = time.time()
        script = Path(guest_workload.__file__).resolve()
        argv = [
            str(Path(sys.executable).resolve()),
            "-I",
            "-S",
            str(script),
            "supervise",
            "--mount",
            str(self.key),
            "--prefix",
            self.prefix,
            "--out",
            str(self.folder),
            "--mode",
            "ro" if self.read_only else "rw",
            "--hang-after",
            f"{self.hang_after:g}",
        ]
        result = await exec_in(self.client, argv, timeout=10.0, detach=self.folder / "log")
        if not result.ok:
            raise GuestWorkloadError(
                f"{self.client.name}: the applications did not start: {result.why()}"
            )

    async def measure_clock(self) -> float:
        """The guest's clock minus the host's, from the quickest of a few round trips."""
        best: tuple[float, float] | None = None
        for _ in range(CLOCK_SAMPLES):
            before = time.time()
            result = await exec_in(self.client, ["date", "+%s.%N"], timeout=5.0)
            after = time.time()
            if not result.ok:
                continue
            try:
                guest = float(result.text().strip())
            except ValueError:
                continue
            if best is None or after - before < best[0]:
                best = (after - before, guest - (before + after) / 2)
        if best is None:
            raise GuestWorkloadError(f"{self.client.name}: could not read its clock")
        return best[1]

    async def stop(self) -> None:
        """Stop the applications; the clock is measured again, for drift."""
        (self.folder / "stop").touch()
        pacer = Pacer.every(0.1, Deadline(STOP_TIMEOUT))
        while not any(line.get("ev") == "stopped" for line in self.read_new()):
            if not await pacer.pause():
                raise GuestWorkloadError(
                    f"{self.client.name}: the applications did not stop within {STOP_TIMEOUT:g}s"
                )
        try:
            self._offset_end = await self.measure_clock()
            self._measured_end = time.time()
            self._parsed = None
        except NfsFailoverError:
            self._offset_end = None

    def read_new(self) -> list[dict[str, object]]:
        """The records written since the last call (whole lines only)."""
        try:
            with open(self.records_file, "rb") as records:
                records.seek(self._position)
                chunk = records.read()
        except FileNotFoundError:
            return []
        self._position += len(chunk)
        data = self._pending + chunk
        lines, _, self._pending = data.rpartition(b"\n")
        new = []
        for line in lines.splitlines() if lines else []:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                new.append(record)
        if new:
            self._lines.extend(new)
            self._parsed = None
        return new

    def records(self) -> Records:
        """Everything recorded so far, on the host's clock (paired again only when new
        lines came, or the clock was measured again: the drill asks many times a second)."""
        self.read_new()
        if self._parsed is None:
            self._parsed = parse(self.client.name, self._lines, self.host_time)
        return self._parsed

    def host_time(self, guest: float) -> float:
        """A guest instant on the host's clock; with two measurements, drift is spread
        linearly over the run."""
        offset = self.offset
        if self._offset_end is not None and guest > self._started_at:
            span = max(self._measured_end - self._started_at, 1.0)
            offset += (self._offset_end - self.offset) * min((guest - self._started_at) / span, 1)
        return guest - offset


async def until_warm(workloads: Sequence[GuestWorkload], timeout: float) -> None:
    """Until every client's applications have their spare processes ready: a service that
    has run a while, as the one an outage strikes in production."""
    pacer = Pacer.every(0.1, Deadline(timeout))
    while not all(w.records().warm for w in workloads):
        if not await pacer.pause():
            cold = [w.client.name for w in workloads if not w.records().warm]
            raise GuestWorkloadError(
                f"the applications' spare processes were not ready within {timeout:g}s in "
                f"{', '.join(cold)}"
            )


def parse(
    client: str, lines: Iterable[dict[str, object]], to_host: Callable[[float], float]
) -> Records:
    """Pair each application's begins with their ends; an operation whose process was
    killed or exited before its end is a failed one that never returned."""
    out = Records()
    in_flight: dict[int, dict[str, object]] = {}
    for line in lines:
        ev = line.get("ev")
        at = to_host(float(line.get("t", 0.0)))  # type: ignore[arg-type]
        pid = int(line.get("pid", 0) or 0)  # type: ignore[call-overload]
        if ev == "begin":
            in_flight[pid] = {**line, "t": at}
        elif ev == "end":
            begun = in_flight.pop(pid, None)
            out.ops.append(_op(client, line, begun["t"] if begun else at, at))  # type: ignore[arg-type]
        elif ev in ("killed", "exit"):
            begun = in_flight.pop(pid, None)
            if begun is not None:
                failed = {**begun, "ok": False, "err": str(ev)}
                out.ops.append(_op(client, failed, float(begun["t"]), None))  # type: ignore[arg-type]
        if ev == "hung" and line.get("since") is not None:
            out.hangs.append(Hang(client, str(line.get("app")), to_host(float(line["since"])), at))  # type: ignore[arg-type]
        elif ev == "mount":
            server = line.get("server")
            out.mounts.append(MountChange(client, at, str(server) if server else None))
        elif ev == "warm":
            out.warm = bool(line.get("warm"))
        elif ev == "stopped":
            out.stopped = True
    out.ops.sort(key=lambda op: op.begin)
    return out


_OP_KEYS = {"ev", "app", "op", "seq", "pid", "t", "ok", "err", "mnt", "server"}


def _op(client: str, line: dict[str, object], begin: float, end: float | None) -> Op:
    seq = line.get("seq")
    server = line.get("server")
    return Op(
        client=client,
        app=str(line.get("app")),
        kind=str(line.get("op")),
        seq=int(seq) if isinstance(seq, int) else None,
        begin=begin,
        end=end,
        ok=bool(line.get("ok")),
        server=str(server) if server else None,
        error=str(line["err"]) if line.get("err") else None,
        seen={k: v for k, v in line.items() if k not in _OP_KEYS},
    )
