"""The drill, repeated: medians of what a failover and a failback cost on the lab.

Runs ``nfs-failover drill`` in-process N times per mode on a lab of its own (tag "b",
so a lab left running is never touched), then once with 20 flaps, and prints medians
(and the spread) of detection, RTO and its overhead above the grace period, break time,
write unavailability, failback time and the client's unavailability during it, with the
totals of lost writes, split-brain instants and false failovers. Needs root.

Goals: RTO overhead <= 2 s read-write, <= 1 s read-only; 0 lost writes; 0 false
failovers in 20 flaps.

Run:  .venv/bin/python bench/failover.py [--runs 5] [--grace 5] [--flaps 20] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from nfs_failover import aio, netguard
from nfs_failover.config import Mode
from nfs_failover.drill.model import DrillReport
from nfs_failover.drill.run import Drill, DrillOptions
from nfs_failover.lab import Lab

GOAL_OVERHEAD = {Mode.READ_WRITE: 2.0, Mode.READ_ONLY: 1.0}
FIGURES = ("detection_s", "rto_s", "rto_overhead_s", "break_s", "write_unavailable_s",
           "failback_s", "failback_unavailable_s")  # fmt: skip
TOTALS = ("writes_acknowledged", "writes_lost", "writes_preserved", "split_brain_instants",
          "false_failovers")  # fmt: skip


def drill(lab: Lab, options: DrillOptions) -> DrillReport:
    report = aio.run(Drill(lab, options).run())
    failed = [f"{c.name}: {c.detail}" for c in report.checks if not c.passed]
    if failed:
        print(f"  drill FAILED: {'; '.join(failed)}")
    return report


def median_line(name: str, values: list[float]) -> str:
    if not values:
        return f"  {name:24} -"
    spread = f"{min(values):.3f}..{max(values):.3f}"
    return f"  {name:24} {statistics.median(values):7.3f} s   ({spread}, n={len(values)})"


def series(mode: Mode, lab: Lab, runs: int, grace: float) -> list[DrillReport]:
    reports = []
    for index in range(runs):
        report = drill(lab, DrillOptions(mode=mode, grace=grace, keep=True))
        s = report.summary
        print(f"  run {index + 1}/{runs}: rto {s['rto_s']} s, overhead {s['rto_overhead_s']} s, "
              f"lost {s['writes_lost']}, passed {s['passed']}")  # fmt: skip
        reports.append(report)
    return reports


def summarize(mode: Mode, reports: list[DrillReport]) -> bool:
    print(f"{mode.value}: medians of {len(reports)} drills")
    for name in FIGURES:
        values = [float(v) for r in reports if isinstance(v := r.summary.get(name), int | float)]
        print(median_line(name, values))
    for name in TOTALS:
        total = sum(int(v) for r in reports if isinstance(v := r.summary.get(name), int))
        print(f"  {name:24} {total:7d}   (total)")
    overheads = [float(v) for r in reports
                 if isinstance(v := r.summary.get("rto_overhead_s"), int | float)]  # fmt: skip
    goal = GOAL_OVERHEAD[mode]
    met = bool(overheads) and statistics.median(overheads) <= goal and all(
        r.passed for r in reports)  # fmt: skip
    print(f"  goal: overhead <= {goal:g} s, nothing lost: {'met' if met else 'NOT met'}")
    return met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--grace", type=float, default=5.0)
    parser.add_argument("--flaps", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="2 runs per mode, 5 flaps")
    args = parser.parse_args()
    os.environ[netguard.ENV] = "1"  # the lab's addresses and loopback only
    runs, flaps = (2, 5) if args.quick else (args.runs, args.flaps)
    with tempfile.TemporaryDirectory(prefix="nfo-bench-") as work:
        lab = Lab(Path(work) / "lab", tag="b", slot=46)
        lab.down()
        try:
            met = [summarize(mode, series(mode, lab, runs, args.grace))
                   for mode in (Mode.READ_WRITE, Mode.READ_ONLY)]  # fmt: skip
            print(f"flaps: {flaps} outages of {0.4 * args.grace:g} s (grace {args.grace:g} s)")
            report = drill(lab, DrillOptions(grace=args.grace, flaps=flaps, keep=True))
            false = report.summary["false_failovers"]
            print(f"  false failovers: {false} (goal 0: {'met' if false == 0 else 'NOT met'})")
            print("all goals met" if all(met) and false == 0 else "some goals NOT met")
        finally:
            lab.down()


if __name__ == "__main__":
    main()
