"""How many full NFS probes a second, and at what CPU cost, against the real lab.

Builds its own lab (tag "b", so a running lab is untouched), runs many concurrent full
probes (portmapper, GETPORT x2, mountd NULL + MNT, nfs NULL + GETATTR) and the same number
of ``rpcinfo -t HOST nfs 3`` runs (one NULL call each, the usual script probe), and prints
probes per second and CPU seconds per 1,000 probes for both, with the ratio.

Run as root after scripts/setup:  .venv/bin/python bench/probe_scale.py [--probes 4000]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from nfs_failover.lab import Lab
from nfs_failover.lab.system import which
from nfs_failover.probe import probe_export

GOAL_CPU_PER_1000 = 0.5
GOAL_RATIO = 20.0


async def run_probes(exports: list[str], count: int, concurrency: int) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds of this process, and failures for ``count`` probes."""
    queue = iter(range(count))
    failures = 0

    async def worker() -> None:
        nonlocal failures
        for i in queue:
            result = await probe_export(exports[i % len(exports)], timeout=5.0)
            failures += not result.up

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - wall0, time.process_time() - cpu0, failures


def run_rpcinfo(hosts: list[str], count: int, concurrency: int) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds of the rpcinfo children, and failures."""
    rpcinfo = which("rpcinfo")
    if rpcinfo is None:
        sys.exit("rpcinfo not found (package rpcbind)")

    def one(i: int) -> int:
        argv = [rpcinfo, "-t", hosts[i % len(hosts)], "nfs", "3"]
        return subprocess.run(argv, capture_output=True, timeout=30, check=False).returncode

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        failures = sum(rc != 0 for rc in pool.map(one, range(count)))
    wall = time.perf_counter() - wall0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=4000, help="full probes to run")
    parser.add_argument("--rpcinfo", type=int, default=400, help="rpcinfo runs to time")
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="nfo-bench-") as tmp:
        lab = Lab(Path(tmp) / "lab", tag="b", slot=41)
        lab.down()
        try:
            lab.up()
            exports = [z.export for z in lab.zones]
            asyncio.run(run_probes(exports, 200, args.concurrency))  # warm up
            wall, cpu, failed = asyncio.run(run_probes(exports, args.probes, args.concurrency))
            r_wall, r_cpu, r_failed = run_rpcinfo(
                [z.address for z in lab.zones], args.rpcinfo, min(args.concurrency, 16)
            )
        finally:
            lab.down()

    ours_per_1000 = cpu / args.probes * 1000
    rpcinfo_per_1000 = r_cpu / args.rpcinfo * 1000
    ratio = rpcinfo_per_1000 / ours_per_1000 if ours_per_1000 else float("inf")
    print(f"{'':28}{'probes/s':>10}{'CPU s/1000':>12}{'failed':>8}")
    print(
        f"{'nfs-failover full probe':28}{args.probes / wall:>10.0f}"
        f"{ours_per_1000:>12.3f}{failed:>8}"
    )
    print(
        f"{'rpcinfo -t HOST nfs 3':28}{args.rpcinfo / r_wall:>10.0f}"
        f"{rpcinfo_per_1000:>12.3f}{r_failed:>8}"
    )
    print(
        f"rpcinfo costs {ratio:.1f}x the CPU of a full probe "
        f"(goal >= {GOAL_RATIO:g}x); probe CPU {ours_per_1000:.3f} s/1000 "
        f"(goal <= {GOAL_CPU_PER_1000} s)"
    )
    print(
        f"interpreter: {sys.version.split()[0]}, event loop: "
        f"{type(asyncio.new_event_loop()).__module__}"
    )


if __name__ == "__main__":
    main()
