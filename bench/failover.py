"""The drill, repeated: medians of what a failover and a failback cost on the lab.

Runs ``nfs-failover drill`` in-process N times per setting on a lab of its own (tag "b",
so a lab left running is never touched) with two client hosts whose applications write
through real hard mounts with the seed's options, then once with 20 flaps, and prints
medians (and the spread) of detection, the application-visible RTO (of the slowest
client) and its overhead above the grace period, its parts (detection, the failover
workflow until the maps are steered, the agent's forced unmount of the hung mount, the
remount by automount, the first acknowledged write), break time, write unavailability,
hung processes, failback time and the clients' unavailability during it, with the totals
of lost writes and rows, stale reads, split-brain instants and false failovers. Settings:
read-write with the default client settings (the watchdog kills a hung process after
3 s), read-write tuned (after 1 s), and read-only. Needs root.

Goals: application-visible RTO <= grace + 5 s on real hard mounts with the seed's
options; 0 acknowledged writes lost; 0 stale reads; 0 false failovers in 20 flaps.

Run:  .venv/bin/python bench/failover.py [--runs 5] [--grace 5] [--flaps 20] [--quick]
                                         [--nfs-version 3|4.1]
                                         [--setting default|tuned|read-only ...]
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
from nfs_failover.drill.options import DrillOptions
from nfs_failover.drill.run import Drill
from nfs_failover.lab import Lab

GOAL_OVERHEAD = 5.0  # seconds above the grace period, as the applications see it
FIGURES = (
    "detection_s",
    "rto_s",
    "rto_overhead_s",
    "break_s",
    "write_unavailable_s",
    "failback_s",
    "failback_unavailable_s",
)
TOTALS = (
    "writes_acknowledged",
    "writes_lost",
    "writes_preserved",
    "split_brain_instants",
    "false_failovers",
)
SETTINGS = {  # --setting: name, mode, watchdog
    "default": ("read-write, default clients (hang after 3 s)", Mode.READ_WRITE, 3.0),
    "tuned": ("read-write, tuned clients (hang after 1 s)", Mode.READ_WRITE, 1.0),
    "read-only": ("read-only", Mode.READ_ONLY, 3.0),
}


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


def series(lab: Lab, runs: int, options: DrillOptions) -> list[DrillReport]:
    reports = []
    for index in range(runs):
        report = drill(lab, options)
        s = report.summary
        print(
            f"  run {index + 1}/{runs}: rto {s.rto_s} s, overhead {s.rto_overhead_s} s, "
            f"lost {s.writes_lost}, passed {s.passed}"
        )
        reports.append(report)
    return reports


def parts(report: DrillReport) -> dict[str, float]:
    """The slowest client's RTO cut at its instants: seconds from the outage to the
    failover's start, to the maps steered, to the agent's unmount, to the remount, and
    to the first acknowledged operation on zone 2."""
    marks = {m.name: m.at for m in report.marks}
    outage = marks.get("outage")
    slowest = max(report.clients, key=lambda c: c.rto_s or 0.0, default=None)
    if outage is None or slowest is None or slowest.rto_s is None:
        return {}
    unmounts = [
        float(str(a["at"]))
        for a in slowest.actions
        if a["what"] == "unmounted" and float(str(a["at"])) > outage
    ]
    remounts = [
        float(str(m["at"]))
        for m in slowest.mounts
        if m["replica"] == "dest1" and float(str(m["at"])) > outage
    ]
    found = {
        "detection": marks.get("detected"),
        "steered": marks.get("steer-to-destination", marks.get("fence-source")),
        "unmounted": min(unmounts, default=None),
        "remounted": min(remounts, default=None),
    }
    cut = {name: round(at - outage, 3) for name, at in found.items() if at is not None}
    cut["first write"] = slowest.rto_s
    return cut


def summarize(name: str, reports: list[DrillReport], grace: float) -> bool:
    print(f"{name}: medians of {len(reports)} drills")
    for figure in FIGURES:
        values = [
            float(v) for r in reports if isinstance(v := getattr(r.summary, figure), int | float)
        ]
        print(median_line(figure, values))
    cuts = [parts(r) for r in reports]
    for part in ("detection", "steered", "unmounted", "remounted", "first write"):
        print(median_line(f"  outage -> {part}", [c[part] for c in cuts if part in c]))
    hung = [c.hung_processes for r in reports for c in r.clients]
    longest = [c.hung_longest_s for r in reports for c in r.clients if c.hung_longest_s]
    print(
        f"  {'hung processes':24} {statistics.median(hung) if hung else 0:7.1f}   "
        f"(median per client; longest {max(longest, default=0):.3f} s)"
    )
    for figure in TOTALS:
        total = sum(int(v) for r in reports if isinstance(v := getattr(r.summary, figure), int))
        print(f"  {figure:24} {total:7d}   (total)")
    stale = sum(c.stale_reads + c.corrupt_reads for r in reports for c in r.clients)
    print(f"  {'stale or corrupt reads':24} {stale:7d}   (total)")
    overheads = [r.summary.rto_overhead_s for r in reports if r.summary.rto_overhead_s is not None]
    met = (
        bool(overheads)
        and statistics.median(overheads) <= GOAL_OVERHEAD
        and all(r.passed for r in reports)
        and stale == 0
    )
    print(
        f"  goal: RTO <= grace + {GOAL_OVERHEAD:g} s ({grace + GOAL_OVERHEAD:g} s), nothing "
        f"lost, no stale read: {'met' if met else 'NOT met'}"
    )
    return met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--grace", type=float, default=5.0)
    parser.add_argument("--flaps", type=int, default=20)
    parser.add_argument("--nfs-version", choices=("3", "4.1"), default="3")
    parser.add_argument("--quick", action="store_true", help="2 runs per setting, 5 flaps")
    parser.add_argument(
        "--setting",
        action="append",
        choices=tuple(SETTINGS),
        help="only this setting (repeatable; default: all of them)",
    )
    args = parser.parse_args()
    os.environ[netguard.ENV] = "1"  # the lab's addresses and loopback only
    runs, flaps = (2, 5) if args.quick else (args.runs, args.flaps)
    with tempfile.TemporaryDirectory(prefix="nfo-bench-") as work:
        lab = Lab(Path(work) / "lab", tag="b", slot=46)
        lab.down()
        try:
            met = []
            for name, mode, hang_after in (SETTINGS[k] for k in args.setting or SETTINGS):
                options = DrillOptions(
                    mode=mode,
                    grace=args.grace,
                    keep=True,
                    hang_after=hang_after,
                    nfs_version=args.nfs_version,
                )
                met.append(summarize(name, series(lab, runs, options), args.grace))
            print(f"flaps: {flaps} outages of {0.4 * args.grace:g} s (grace {args.grace:g} s)")
            report = drill(
                lab,
                DrillOptions(
                    grace=args.grace, flaps=flaps, keep=True, nfs_version=args.nfs_version
                ),
            )
            false = report.summary.false_failovers
            print(f"  false failovers: {false} (goal 0: {'met' if false == 0 else 'NOT met'})")
            print("all goals met" if all(met) and false == 0 else "some goals NOT met")
        finally:
            lab.down()


if __name__ == "__main__":
    main()
