"""The local engine's incremental transfer against plain ``rsync -a --delete``.

Builds a tree of small files, makes the engine's baseline and a plain rsync copy of it,
changes a fraction of the files, then times the engine's incremental transfer (rsync plus
its manifest update) and plain ``rsync -a --delete`` on the same change, in the same run.
Prints the ratio (goal: at most 1.1) for several tree and change sizes. Needs root: the
engine sends a transfer only when the source answers over NFS, so the replicas are the
zones of a lab of the benchmark's own (its exports are not flipped: only the data path is
timed), and nothing is sent to any address the lab does not hold.

Run:  .venv/bin/python bench/replication.py [--files 100000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import tempfile
import time
from pathlib import Path

from nfs_failover import netguard
from nfs_failover.config import Volume
from nfs_failover.lab import Lab
from nfs_failover.replication.local import LocalProvider

GOAL_RATIO = 1.1


def make_tree(root: Path, files: int) -> list[Path]:
    paths = []
    per_dir = 1000
    for i in range(files):
        folder = root / f"d{i // per_dir:04}"
        if i % per_dir == 0:
            folder.mkdir(parents=True)
        path = folder / f"f{i:06}"
        path.write_bytes(random.randbytes(random.randint(200, 4000)))
        paths.append(path)
    return paths


def change(paths: list[Path], fraction: float) -> None:
    for path in random.sample(paths, max(1, int(len(paths) * fraction))):
        path.write_bytes(random.randbytes(random.randint(200, 4000)))


def engine_for(lab: Lab, work: Path, source: Path, destination: Path) -> LocalProvider:
    first, second = (zone.export for zone in lab.zones)
    volume = Volume.model_validate(
        {
            "name": "bench",
            "mode": "read-write",
            "replicas": [{"name": "a", "export": first}, {"name": "b", "export": second}],
            "replication": {
                "provider": "local",
                "source_path": str(source),
                "destination_path": str(destination),
                "state_dir": str(work / "state"),
            },
        }
    )
    return LocalProvider(volume)


def plain_rsync(source: Path, destination: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["rsync", "-a", "--delete", f"{source}/", f"{destination}/"], check=True)
    return time.perf_counter() - started


def measure(lab: Lab, files: int, fraction: float, rounds: int) -> tuple[float, float]:
    """Median seconds of the engine's and plain rsync's incremental transfer."""
    with tempfile.TemporaryDirectory(prefix="nfo-bench-repl-") as tmp:
        work = Path(tmp)
        source, ours, theirs = work / "source", work / "engine", work / "plain"
        paths = make_tree(source, files)
        engine = engine_for(lab, work, source, ours)
        asyncio.run(engine.transfer_now(timeout=3600))
        plain_rsync(source, theirs)
        engine_times, plain_times = [], []
        for _ in range(rounds):
            change(paths, fraction)
            started = time.perf_counter()
            asyncio.run(engine.transfer_now(timeout=3600))
            engine_times.append(time.perf_counter() - started)
            plain_times.append(plain_rsync(source, theirs))
        asyncio.run(engine.close())
    return sorted(engine_times)[rounds // 2], sorted(plain_times)[rounds // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller trees, for a smoke run")
    args = parser.parse_args()
    big = 10_000 if args.quick else args.files
    cases = [(big // 10, 0.01), (big, 0.01), (big, 0.10)]
    print(f"{'files':>8} {'changed':>8} {'engine s':>9} {'rsync s':>9} {'ratio':>6}")
    worst = 0.0
    os.environ[netguard.ENV] = "1"  # the lab's addresses and loopback only
    lab = Lab(Path(tempfile.mkdtemp(prefix="nfo-bench-repl-lab-")), tag="r", slot=52)
    try:
        lab.up()
        for files, fraction in cases:
            ours, theirs = measure(lab, files, fraction, args.rounds)
            worst = max(worst, ours / theirs)
            print(f"{files:>8} {fraction:>8.0%} {ours:>9.3f} {theirs:>9.3f} {ours / theirs:>6.2f}")
    finally:
        lab.down()
    print(
        f"worst ratio {worst:.2f} (goal <= {GOAL_RATIO}); median of {args.rounds} rounds; "
        f"{os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
