"""How many full NFS probes a second, and at what CPU cost, against the real lab.

Builds its own lab (tag "b", so a running lab is untouched) and runs, against both zones:
- monitor probes: each of 32 monitors keeps its connections between probes, as the
  controller does when it probes every endpoint every second;
- one-shot probes: fresh connections each time, as `nfs-failover probe` does;
- `rpcinfo -t HOST nfs 3` once per probe, the usual scripted check (it only connects to
  the portmapper and calls NFS NULL).
A full probe is portmapper, GETPORT of mountd and nfs, NULL + MNT on mountd, NULL +
GETATTR on nfs. CPU is this process's user+system time; for rpcinfo it adds the children
(rpcinfo itself) to what spawning them cost here.

Run as root after scripts/setup:  .venv/bin/python bench/probe_scale.py [--probes 4000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from nfs_failover import aio, netguard
from nfs_failover.lab import Lab
from nfs_failover.lab.system import which
from nfs_failover.probe import Prober

GOAL_CPU_PER_1000 = 0.5
GOAL_RATIO = 20.0
MONITORS = 32


def cpu_now(children: bool = False) -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    total = usage.ru_utime + usage.ru_stime
    if children:
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        total += kids.ru_utime + kids.ru_stime
    return total


async def run_probes(exports: list[str], count: int, keep: bool) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and failures for ``count`` probes by MONITORS workers."""
    probers = [Prober(timeout=5.0, keep=keep) for _ in range(MONITORS)]
    failures = 0

    async def monitor(prober: Prober, work: list[int]) -> None:
        nonlocal failures
        for i in work:
            failures += not (await prober.probe(exports[i % len(exports)])).up

    async def round_(n: int) -> None:
        await asyncio.gather(
            *(monitor(p, list(range(i, n, MONITORS))) for i, p in enumerate(probers))
        )

    await round_(MONITORS * 4)  # connect (when kept) and warm up
    failures = 0
    cpu0, wall0 = cpu_now(), time.perf_counter()
    await round_(count)
    wall, cpu = time.perf_counter() - wall0, cpu_now() - cpu0
    for prober in probers:
        await prober.close()
    return wall, cpu, failures


def run_rpcinfo(hosts: list[str], count: int) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (spawning plus the rpcinfo children) and failures."""
    rpcinfo = which("rpcinfo")
    if rpcinfo is None:
        sys.exit("rpcinfo not found (package rpcbind)")

    def one(i: int) -> int:
        argv = [rpcinfo, "-t", hosts[i % len(hosts)], "nfs", "3"]
        return subprocess.run(argv, capture_output=True, timeout=30, check=False).returncode

    cpu0, wall0 = cpu_now(children=True), time.perf_counter()
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        failures = sum(rc != 0 for rc in pool.map(one, range(count)))
    return time.perf_counter() - wall0, cpu_now(children=True) - cpu0, failures


def row(name: str, count: int, wall: float, cpu: float, failed: int) -> float:
    per_1000 = cpu / count * 1000
    print(f"{name:34}{count:>7}{count / wall:>10.0f}{per_1000:>12.3f}{failed:>8}")
    return per_1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=4000, help="full probes of each kind")
    parser.add_argument("--rpcinfo", type=int, default=400, help="rpcinfo runs")
    args = parser.parse_args()
    os.environ[netguard.ENV] = "1"  # the lab's addresses and loopback only

    with tempfile.TemporaryDirectory(prefix="nfo-bench-") as tmp:
        lab = Lab(Path(tmp) / "lab", tag="b", slot=41)
        lab.down()
        try:
            lab.up()
            exports = [z.export for z in lab.zones]
            kept = aio.run(run_probes(exports, args.probes, keep=True))
            fresh = aio.run(run_probes(exports, args.probes, keep=False))
            rpcinfo = run_rpcinfo([z.address for z in lab.zones], args.rpcinfo)
        finally:
            lab.down()

    print(f"{'':34}{'count':>7}{'probes/s':>10}{'CPU s/1000':>12}{'failed':>8}")
    monitor = row("full probe, monitor (kept conns)", args.probes, *kept)
    one_shot = row("full probe, one-shot (new conns)", args.probes, *fresh)
    script = row("rpcinfo -t HOST nfs 3", args.rpcinfo, *rpcinfo)
    print(
        f"monitor probe: {monitor:.3f} CPU s/1000 (goal <= {GOAL_CPU_PER_1000}), "
        f"{script / monitor:.1f}x cheaper than rpcinfo (goal >= {GOAL_RATIO:g}x); "
        f"one-shot: {script / one_shot:.1f}x"
    )
    print(
        f"python {sys.version.split()[0]}, {aio.LOOP}, {os.cpu_count()} cores, {MONITORS} monitors"
    )


if __name__ == "__main__":
    main()
