"""The local engine's transfers against plain ``rsync -a --delete``, in one run.

Cost: a tree of small files (100,000 in 100 folders), brought up to date after the same
change by the engine's data path (its change tracker, rsync of the listed paths, the
manifest update) and by plain ``rsync -a --delete``, each into its own destination:
0 %, 0.1 %, 1 % and 10 % of the files rewritten, by a child process. Wall time and CPU
(user + system): for the engine, its process (the tracker's thread included, from the
first change on) and its rsync; for plain rsync, rsync. Folders only: no network (the
engine's check of the source over NFS, a few milliseconds on the lab, is left out).

RPO: 100 writes a second for 60 s into the same tree. A write's lag is the time from its
acknowledgement to the end of the first transfer that started after it: the engine
serving with ``schedule: continuous``, and plain rsync run back to back. ``--rpo lab``
(the default) builds a lab of its own (tag "rb"; root and the lab's Debian packages)
and writes over NFS through Ganesha to the source zone, with the whole engine: its NFS
checks and its access confirmation included. ``--rpo folders`` writes straight into the
folder and leaves the engine's NFS check of the source out. Nothing is sent to an
address the lab does not hold.

Goals: at 1 % changed at most 0.15 x plain rsync's time; 0.1 % cheaper than 1 % (the cost
grows with the change, not the tree); RPO p99 at most 1 s under 100 writes/s.

Run:  .venv/bin/python bench/replication.py [--files 100000] [--rounds 3]
                                            [--rpo lab|folders|none] [--rpo-seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from nfs_failover import netguard
from nfs_failover.config import Volume, load_config
from nfs_failover.lab import Lab
from nfs_failover.pacing import Deadline
from nfs_failover.replication import Progress
from nfs_failover.replication.local import LocalProvider, RelationshipState, Transfer
from nfs_failover.replication.manifest import Manifest
from nfs_failover.replication.tracker import Tracker
from nfs_failover.replication.transfer import transfer
from nfs_failover.rpc.mount import MountClient
from nfs_failover.rpc.nfs3 import Nfs3Client
from nfs_failover.rpc.portmap import PortmapClient

GOAL_RATIO = 0.15  # engine / plain rsync at 1 % changed
GOAL_P99 = 1.0  # seconds of lag under 100 writes/s
FRACTIONS = (0.0, 0.001, 0.01, 0.10)
PER_FOLDER = 1000
PLAIN = ("rsync", "-a", "--delete")
T = 3600.0

_CHANGE = """
import random, sys
from pathlib import Path
root, seed, count, total = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
for i in rng.sample(range(total), count):
    path = root / f"d{i // 1000:04}" / f"f{i:06}"
    path.write_bytes(rng.randbytes(rng.randint(200, 4000)))
"""


def make_tree(root: Path, files: int) -> None:
    rng = random.Random(1)
    for i in range(files):
        folder = root / f"d{i // PER_FOLDER:04}"
        if i % PER_FOLDER == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:06}").write_bytes(rng.randbytes(rng.randint(200, 4000)))


def change(root: Path, files: int, count: int, seed: int) -> None:
    """Rewrite ``count`` files, in a child process: its work is not the engine's."""
    if count:
        subprocess.run(
            [sys.executable, "-c", _CHANGE, str(root), str(seed), str(count), str(files)],
            check=True,
            timeout=600,
        )


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Cost:
    seconds: float
    cpu: float
    listed: int = 0


# -- cost -------------------------------------------------------------------------------


class Engine:
    """The engine's data path on two folders: tracker, transfer, manifest."""

    def __init__(self, source: Path, destination: Path, work: Path) -> None:
        self.source, self.destination = source, destination
        self.tracker = Tracker(source)
        self.manifest = Manifest(work / "manifest.db")

    def start(self) -> None:
        self.tracker.start()
        self.transfer()  # the first transfer walks the whole tree

    def transfer(self) -> int:
        done = asyncio.run(
            transfer(
                self.source, self.destination, self.manifest, Deadline(T), tracker=self.tracker
            )
        )
        return done.listed

    def close(self) -> None:
        self.tracker.close()
        self.manifest.close()


def plain_rsync(source: Path, destination: Path) -> Cost:
    cpu, started = children_cpu(), time.perf_counter()
    subprocess.run([*PLAIN, f"{source}/", f"{destination}/"], check=True, timeout=T)
    return Cost(time.perf_counter() - started, children_cpu() - cpu)


def measure_costs(work: Path, files: int, rounds: int) -> dict[float, tuple[Cost, Cost]]:
    source, ours, theirs = work / "source", work / "engine", work / "plain"
    engine = Engine(source, ours, work)
    engine.start()
    plain_rsync(source, theirs)
    results: dict[float, tuple[Cost, Cost]] = {}
    seed = 0
    try:
        for fraction in FRACTIONS:
            mine: list[Cost] = []
            plain: list[Cost] = []
            for _ in range(rounds):
                seed += 1
                own = time.process_time()  # from the first change: the tracker's share
                change(source, files, int(files * fraction), seed)
                cpu, started = children_cpu(), time.perf_counter()
                listed = engine.transfer()
                seconds = time.perf_counter() - started
                spent = time.process_time() - own + children_cpu() - cpu
                mine.append(Cost(seconds, spent, listed))
                plain.append(plain_rsync(source, theirs))
            results[fraction] = (_median(mine), _median(plain))
    finally:
        engine.close()
    return results


def _median(costs: list[Cost]) -> Cost:
    ordered = sorted(costs, key=lambda c: c.seconds)
    return ordered[len(ordered) // 2]


# -- RPO --------------------------------------------------------------------------------


@dataclass
class Rpo:
    writes: int
    transfers: int
    p50: float
    p99: float
    worst: float


def lags(written: list[float], runs: list[tuple[float, float]]) -> Rpo:
    """Each write's lag: until the end of the first transfer that started after it."""
    runs.sort()
    starts = [started for started, _ in runs]
    seen = []
    for at in written:
        index = bisect.bisect_left(starts, at)
        if index < len(runs):
            seen.append(runs[index][1] - at)
    seen.sort()
    if not seen:
        return Rpo(len(written), len(runs), float("nan"), float("nan"), float("nan"))
    return Rpo(
        len(written),
        len(runs),
        statistics.median(seen),
        seen[min(len(seen) - 1, int(len(seen) * 0.99))],
        seen[-1],
    )


class Recorded(LocalProvider):
    """The engine, noting when each of its transfers started and ended."""

    runs: list[tuple[float, float]]
    check_source = True

    async def _transfer(
        self,
        state: RelationshipState,
        deadline: Deadline,
        progress: Progress | None = None,
        full: bool = False,
    ) -> tuple[RelationshipState, Transfer]:
        state, record = await super()._transfer(state, deadline, None, full)
        self.runs.append((record.started, record.ended))
        return state, record

    async def _require_reachable(self, index: int, deadline: Deadline) -> None:
        if self.check_source:
            await super()._require_reachable(index, deadline)


Writer = Callable[[], Awaitable[None]]


async def steady(write: Writer, rate: float, seconds: float) -> list[float]:
    """``rate`` writes a second for ``seconds``; when each was acknowledged."""
    written: list[float] = []
    started = time.monotonic()
    count = int(rate * seconds)
    for i in range(count):
        await asyncio.sleep(max(started + i / rate - time.monotonic(), 0.0))
        await write()
        written.append(time.time())
    return written


async def engine_rpo(
    volume: Volume, write: Writer, rate: float, seconds: float, *, check_source: bool
) -> Rpo:
    engine = Recorded(volume)
    engine.runs = []
    engine.check_source = check_source
    stop = asyncio.Event()
    serving = asyncio.create_task(engine.serve(stop))
    try:
        deadline = Deadline(T)
        while (await engine.status(timeout=10)).lag_source != "tracker":  # the first walk
            if deadline.passed() or serving.done():
                raise SystemExit("the engine did not complete its first walk")
            await asyncio.sleep(0.1)
        engine.runs.clear()
        written = await steady(write, rate, seconds)
        caught_up = Deadline(30.0)
        while engine.runs and engine.runs[-1][0] < written[-1] and not caught_up.passed():
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(serving, 60)
        await engine.close()
    return lags(written, engine.runs)


async def plain_rpo(source: Path, plain: Path, write: Writer, rate: float, seconds: float) -> Rpo:
    runs: list[tuple[float, float]] = []
    done = asyncio.Event()

    async def loop() -> None:
        while not done.is_set():
            started = time.time()
            await asyncio.to_thread(
                subprocess.run, [*PLAIN, f"{source}/", f"{plain}/"], check=False, timeout=T
            )
            runs.append((started, time.time()))

    await asyncio.to_thread(  # the baseline: the loop's first run copies only changes
        subprocess.run, [*PLAIN, f"{source}/", f"{plain}/"], check=True, timeout=T
    )
    looping = asyncio.create_task(loop())
    written = await steady(write, rate, seconds)
    while not runs or runs[-1][0] < written[-1]:
        await asyncio.sleep(0.05)
    done.set()
    await looping
    return lags(written, runs)


def folder_writer(source: Path, files: int) -> Writer:
    rng = random.Random(7)

    async def write() -> None:
        i = rng.randrange(files)
        (source / f"d{i // PER_FOLDER:04}" / f"f{i:06}").write_bytes(rng.randbytes(1000))

    return write


async def nfs_writer(export_host: str, export_path: str, files: int) -> tuple[Writer, Nfs3Client]:
    """Writes over NFS, as a client makes them, to 200 files of the tree."""
    async with await PortmapClient.connect(export_host, timeout=5) as pmap:
        port = await pmap.getport(100005, 3)
    async with await MountClient.connect(export_host, port, timeout=5) as mountd:
        root = (await mountd.mnt(export_path)).fhandle
    nfs = await Nfs3Client.connect(export_host, timeout=5)
    rng = random.Random(7)
    handles = []
    for i in rng.sample(range(files), 200):
        folder, _ = await nfs.lookup(root, f"d{i // PER_FOLDER:04}", timeout=5)
        handle, _ = await nfs.lookup(folder, f"f{i:06}", timeout=5)
        handles.append(handle)

    async def write() -> None:
        await nfs.write(rng.choice(handles), 0, rng.randbytes(1000), timeout=5)

    return write, nfs


def folder_volume(work: Path, source: Path, destination: Path) -> Volume:
    return Volume.model_validate(
        {
            "name": "bench",
            "mode": "read-write",
            "replicas": [
                {"name": "a", "export": "127.0.0.1:/source"},  # never contacted
                {"name": "b", "export": "127.0.0.1:/destination"},
            ],
            "replication": {
                "provider": "local",
                "schedule": "continuous",
                "source_path": str(source),
                "destination_path": str(destination),
                "state_dir": str(work / "rpo-state"),
            },
        }
    )


def rpo_on_folders(work: Path, files: int, rate: float, seconds: float) -> tuple[Rpo, Rpo]:
    source = work / "source"
    volume = folder_volume(work, source, work / "rpo-engine")
    write = folder_writer(source, files)
    ours = asyncio.run(engine_rpo(volume, write, rate, seconds, check_source=False))
    theirs = asyncio.run(plain_rpo(source, work / "rpo-plain", write, rate, seconds))
    return ours, theirs


def rpo_on_lab(work: Path, files: int, rate: float, seconds: float) -> tuple[Rpo, Rpo]:
    os.environ[netguard.ENV] = "1"  # the lab's addresses and loopback only
    lab = Lab(work / "lab", tag="rb", slot=52)
    lab.down()  # what a crashed earlier run left
    try:
        lab.up()
        base = load_config(lab.config_path).volumes[0]
        settings = base.replication.model_copy(
            update={"schedule": "continuous", "state_dir": work / "lab-state"}
        )
        volume = base.model_copy(update={"replication": settings})
        source = lab.zones[0].folder
        print(f"building the tree in the source zone's folder {source} ...", flush=True)
        make_tree(source, files)
        export = volume.replicas[0].export

        async def run() -> tuple[Rpo, Rpo]:
            write, nfs = await nfs_writer(export.host, export.path, files)
            try:
                ours = await engine_rpo(volume, write, rate, seconds, check_source=True)
                theirs = await plain_rpo(source, work / "rpo-plain", write, rate, seconds)
            finally:
                await nfs.close()
            return ours, theirs

        return asyncio.run(run())
    finally:
        lab.down()


# -- report -----------------------------------------------------------------------------


def print_costs(files: int, rounds: int, results: dict[float, tuple[Cost, Cost]]) -> None:
    print(f"\nCost: {files:,} files in {files // PER_FOLDER} folders, median of {rounds} rounds")
    print(
        f"{'changed':>8} {'files':>7} | {'engine s':>8} {'cpu s':>6} {'listed':>7} |"
        f" {'rsync s':>8} {'cpu s':>6} | {'time ratio':>10}"
    )
    for fraction, (ours, theirs) in results.items():
        print(
            f"{fraction:>8.1%} {int(files * fraction):>7} | {ours.seconds:>8.3f} {ours.cpu:>6.3f}"
            f" {ours.listed:>7} | {theirs.seconds:>8.3f} {theirs.cpu:>6.3f} |"
            f" {ours.seconds / theirs.seconds:>10.3f}"
        )


def print_rpo(how: str, rate: float, seconds: float, ours: Rpo, theirs: Rpo) -> None:
    print(f"\nRPO: {rate:g} writes/s for {seconds:g} s ({how}); lag of each write, seconds")
    print(f"{'':>22} {'writes':>7} {'transfers':>9} {'p50':>7} {'p99':>7} {'max':>7}")
    for name, rpo in (("engine (continuous)", ours), ("rsync back to back", theirs)):
        print(
            f"{name:>22} {rpo.writes:>7} {rpo.transfers:>9} {rpo.p50:>7.3f} {rpo.p99:>7.3f}"
            f" {rpo.worst:>7.3f}"
        )


def print_goals(results: dict[float, tuple[Cost, Cost]], rpo: Rpo | None) -> None:
    ours, theirs = results[0.01]
    ratio = ours.seconds / theirs.seconds
    grows = results[0.001][0].seconds < ours.seconds
    print("\nGoals")
    print(
        f"  1% changed: {ratio:.3f} x plain rsync's time (goal <= {GOAL_RATIO}):"
        f" {_met(ratio <= GOAL_RATIO)}"
    )
    print(f"  0.1% cheaper than 1%: {_met(grows)}")
    if rpo is not None:
        print(f"  RPO p99 {rpo.p99:.3f} s (goal <= {GOAL_P99} s): {_met(rpo.p99 <= GOAL_P99)}")


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rpo", choices=("lab", "folders", "none"), default="lab")
    parser.add_argument("--rpo-seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=100.0, help="writes a second")
    parser.add_argument("--work", type=Path, help="where the trees go (default: a new tmp)")
    args = parser.parse_args()
    if shutil.which("rsync") is None:
        raise SystemExit("bench/replication.py needs rsync")
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} cores, load average {load:.2f} at the start")
    with contextlib.ExitStack() as stack:
        work = args.work or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="nfo-bench-repl-"))
        )
        work.mkdir(parents=True, exist_ok=True)
        print(f"building {args.files:,} files in {work / 'source'} ...", flush=True)
        make_tree(work / "source", args.files)
        results = measure_costs(work, args.files, args.rounds)
        print_costs(args.files, args.rounds, results)
        rpo = None
        if args.rpo == "folders":
            rpo, plain = rpo_on_folders(work, args.files, args.rate, args.rpo_seconds)
            print_rpo("writes into the folder, no NFS", args.rate, args.rpo_seconds, rpo, plain)
        elif args.rpo == "lab":
            rpo, plain = rpo_on_lab(work, args.files, args.rate, args.rpo_seconds)
            print_rpo("writes over NFS through Ganesha", args.rate, args.rpo_seconds, rpo, plain)
        print_goals(results, rpo)


if __name__ == "__main__":
    main()
