"""How the etcd store holds up with a fleet: 1,000 agents learning a desired-state change,
and the controller's cycle with 200 volume pairs. One real etcd (Debian's /usr/bin/etcd,
the test suite's helper: a free port on 127.0.0.1, a temporary data folder, short raft
ticks and ``--unsafe-no-fsync``, so writes cost less than on a cluster with disks),
stopped at the end.

1. The fleet. A simulated agent is what an agent runs to learn a change: its own
   ``EtcdStore`` (its own HTTP connection to etcd, as an agent on its own host has) and
   its own ``watch_desired_async`` (the agent's ``_follow``: the blocking etcd watch in a
   thread of its own, each snapshot handed to an event loop). It does not render maps or
   probe. The agents are spread over ``--workers`` processes (10 x 100 by default), each
   with one event loop; every agent stamps ``time.monotonic()`` (one clock for the whole
   host) when a snapshot first shows the new generation or a newer one. The bench then
   makes ``--changes`` compare-and-swap writes of one volume's desired state, each with
   the next generation, ``--spacing`` seconds apart, and takes each agent's delay from
   the write's return (the goal: p99 of the last agent's under 1 s) and from its start
   (a write waits for etcd, which also sends the change to every watch, so an agent may
   know a change before its writer does). Once every agent has the last change, the
   fleet stays idle for ``--idle`` seconds (longer than the watch's 10 s silence limit,
   after which every stream is opened again) and the CPU that etcd and the agents spend
   doing nothing is shown.
2. The controller. A config of ``--volumes`` volume pairs on the local engine over plain
   folders (its status is a read of its state file), an etcd store with every volume's
   desired state and the reports of ``--reporters`` vantage points, and
   ``Controller.cycle()`` timed over ``--cycles`` cycles, every store call counted. The
   replicas' exports are on 127.0.0.2, where nothing listens: each probe fails at once
   (connection refused) instead of waiting out its timeout, so the cycle's time is the
   store's and the decisions', not NFS's. Every replica then looks down but stays
   within its grace period, so no workflow starts.

Both parts share the machine with etcd, which the bench starts (so it runs at the bench's
own nice level): the figures include etcd's and the agents' CPU competing with the
writer's and the controller's, and with whatever else the machine runs.

Run after scripts/setup:  .venv/bin/python bench/fleet.py [--agents 1000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.store.etcd_server import EtcdServer

from nfs_failover import netguard
from nfs_failover.config import Config, EtcdSettings, HostPort, Volume
from nfs_failover.controller.loop import Controller
from nfs_failover.desired import VolumeDesired, normal
from nfs_failover.store import EtcdStore, Report, Store, watch_desired_async

GOAL_P99_S = 1.0
PREFIX = "/fleet/"
VOLUME = "crr"


def desired(generation: int) -> VolumeDesired:
    active = ("site1", "dest1")[generation % 2]
    return VolumeDesired(VOLUME, (active,), active, (), generation)


def cuts(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        value = values[0] if values else float("nan")
        return {"p50": value, "p99": value, "max": value}
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": q[49], "p99": q[98], "max": max(values)}


def process_cpu(pid: int) -> float:
    """User+system seconds of a process, from /proc (etcd's)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- 1. the fleet ------------------------------------------------------------------------


class Retries(logging.Handler):
    """Counts the watch's "trying again" warnings (a stream that could not be opened)."""

    count = 0

    def emit(self, record: logging.LogRecord) -> None:
        Retries.count += 1


def worker(endpoint: tuple[str, int], count: int, pipe: Connection) -> None:
    """``count`` agents in one process: each its own store and watch; tells the parent
    when every one has its first snapshot, and sends what each saw when told to stop."""
    watch_log = logging.getLogger("nfs_failover.store.etcd_watch")
    watch_log.addHandler(Retries(logging.WARNING))
    watch_log.propagate = False
    asyncio.run(_agents(HostPort(*endpoint), count, pipe))


async def _agents(endpoint: HostPort, count: int, pipe: Connection) -> None:
    settings = EtcdSettings(prefix=PREFIX)
    stores = [EtcdStore([endpoint], settings=settings) for _ in range(count)]
    stop = asyncio.Event()
    seen: list[dict[int, float]] = [{} for _ in range(count)]
    ready = asyncio.Event()
    started = [0]

    async def agent(index: int) -> None:
        newest = -1
        async for snapshot in watch_desired_async(stores[index], stop):
            now = time.monotonic()
            state = snapshot.get(VOLUME)
            if state is None or state.generation <= newest:
                continue
            if newest < 0:
                started[0] += 1
                if started[0] == count:
                    ready.set()
            for generation in range(newest + 1, state.generation + 1):
                seen[index][generation] = now
            newest = state.generation

    tasks = [asyncio.create_task(agent(i)) for i in range(count)]
    await ready.wait()
    pipe.send(("ready", threading.active_count(), Retries.count))
    last = await asyncio.to_thread(pipe.recv)  # the last change's generation: now idle
    caught_up = time.monotonic() + 120
    while any(last not in agent for agent in seen) and time.monotonic() < caught_up:
        await asyncio.sleep(0.1)  # the stragglers' backlog is not idle time
    pipe.send("quiet")
    cpu0 = _own_cpu()
    await asyncio.to_thread(pipe.recv)  # "stop"
    idle_cpu = _own_cpu() - cpu0
    stop.set()
    await asyncio.wait(tasks, timeout=10)
    for store in stores:
        store.close()
    pipe.send(("seen", seen, idle_cpu, Retries.count))


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def fleet(server: EtcdServer, args: argparse.Namespace) -> dict[str, Any]:
    writer = EtcdStore([server.endpoint], settings=EtcdSettings(prefix=PREFIX))
    assert writer.set_desired(desired(0), expected_generation=None)
    assert server.process is not None
    etcd_pid = server.process.pid
    context = multiprocessing.get_context("spawn")
    per = [
        args.agents // args.workers + (i < args.agents % args.workers) for i in range(args.workers)
    ]
    pipes, processes = [], []
    began = time.monotonic()
    for count in per:
        mine, theirs = context.Pipe()
        process = context.Process(
            target=worker, args=((server.endpoint.host, server.endpoint.port), count, theirs)
        )
        process.start()
        pipes.append(mine)
        processes.append(process)
    try:
        readies = [pipe.recv() for pipe in pipes]
        start_s = time.monotonic() - began
        threads = sum(ready[1] for ready in readies)
        start_retries = sum(ready[2] for ready in readies)
        print(
            f"fleet: {args.agents} agents watching in {args.workers} processes"
            f" ({threads} threads), all watching after {start_s:.1f}s"
            f" ({start_retries} watches opened again after a failed first try)",
            file=sys.stderr if args.json else sys.stdout,
            flush=True,
        )
        etcd_cpu0, sent, returned = process_cpu(etcd_pid), {}, {}
        for generation in range(1, args.changes + 1):
            time.sleep(args.spacing)
            sent[generation] = time.monotonic()
            assert writer.set_desired(desired(generation), expected_generation=generation - 1)
            returned[generation] = time.monotonic()
        for pipe in pipes:
            pipe.send(args.changes)
        for pipe in pipes:
            pipe.recv()  # every agent has seen the last change
        etcd_busy = process_cpu(etcd_pid) - etcd_cpu0
        etcd_idle0 = process_cpu(etcd_pid)
        time.sleep(args.idle)
        etcd_idle = process_cpu(etcd_pid) - etcd_idle0
        for pipe in pipes:
            pipe.send("stop")
        answers = [pipe.recv() for pipe in pipes]
    finally:
        for process in processes:
            process.join(20)
            if process.is_alive():
                process.kill()
        writer.close()
    seen = [agent for answer in answers for agent in answer[1]]
    missed = sum(generation not in agent for agent in seen for generation in returned)
    return {
        **delays(seen, returned, "from_return"),
        **delays(seen, sent, "from_start"),
        "write_s": cuts([returned[g] - sent[g] for g in sent]),
        "agents": args.agents,
        "workers": args.workers,
        "threads": threads,
        "start_s": start_s,
        "start_retries": start_retries,
        "retries_after_start": sum(a[3] for a in answers) - start_retries,
        "changes": args.changes,
        "missed": missed,
        "etcd_cpu_s_per_change": etcd_busy / args.changes,
        "idle_s": args.idle,
        "etcd_idle_cpu_share": etcd_idle / args.idle,
        "agents_idle_cpu_share": sum(answer[2] for answer in answers) / args.idle,
    }


def delays(seen: list[dict[int, float]], at: dict[int, float], name: str) -> dict[str, Any]:
    """Each agent's delay after ``at`` (per generation), and the last agent's per change."""
    per_agent: list[float] = []
    last: list[float] = []
    for generation, when in at.items():
        late = [agent[generation] - when for agent in seen if generation in agent]
        per_agent += late
        if late:
            last.append(max(late))
    return {
        f"last_agent_{name}_s": cuts(last),
        f"per_agent_{name}_s": cuts(per_agent),
        f"min_per_agent_{name}_s": min(per_agent, default=float("nan")),
    }


# -- 2. the controller -------------------------------------------------------------------


class Counting:
    """A store that counts the calls made to it, by method."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._store, name)
        if not callable(found):
            return found

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return found(*args, **kwargs)

        return counted


def fleet_config(folder: Path, volumes: int) -> Config:
    made = []
    for i in range(volumes):
        name = f"vol{i:03d}"
        for side in ("source", "destination"):
            (folder / name / side).mkdir(parents=True)
        made.append(
            Volume.model_validate(
                {
                    "name": name,
                    "mode": "read-write",
                    "replicas": [
                        {"name": "site1", "export": f"127.0.0.2:/{name}-site1"},
                        {"name": "dest1", "export": f"127.0.0.2:/{name}-dest1"},
                    ],
                    "replication": {
                        "provider": "local",
                        "source_path": str(folder / name / "source"),
                        "destination_path": str(folder / name / "destination"),
                        "state_dir": str(folder / name / "state"),
                    },
                }
            )
        )
    return Config.model_validate(
        {
            "volumes": made,
            "policy": {"probe_interval": "1s", "probe_timeout": "2s", "failover_after": "10m"},
        }
    )


def seed(store: Store, config: Config, reporters: int) -> None:
    now = time.time()
    for volume in config.volumes:
        store.set_desired(normal(volume, False), expected_generation=None)
        for agent in range(reporters):
            for replica in volume.replicas:
                store.put_report(
                    Report(f"client{agent}", volume.name, replica.name, True, "ok", 0.001, now)
                )


def controller(server: EtcdServer, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    config = fleet_config(folder, args.volumes)
    etcd = EtcdStore([server.endpoint], settings=EtcdSettings(prefix="/controller/"))
    seed(etcd, config, args.reporters)
    store = Counting(etcd)
    looped = Controller(config, store, name="bench")  # type: ignore[arg-type]
    times: list[float] = []
    calls: list[Counter[str]] = []

    async def run() -> None:
        try:
            for _ in range(args.cycles):
                store.calls.clear()
                began = time.perf_counter()
                decisions = await looped.cycle()
                times.append(time.perf_counter() - began)
                calls.append(Counter(store.calls))
            assert len(decisions) == args.volumes
        finally:
            await looped.close()

    asyncio.run(run())
    etcd.close()
    steady = calls[-1]
    return {
        "volumes": args.volumes,
        "reporters": args.reporters,
        "cycles": args.cycles,
        "first_cycle_s": times[0],
        "cycle_s": cuts(times[1:]),
        "store_calls_first": sum(calls[0].values()),
        "store_calls": sum(steady.values()),
        "store_calls_by_method": dict(steady.most_common()),
    }


# -- the figures -------------------------------------------------------------------------


def show(result: dict[str, Any]) -> None:
    ms: Callable[[float], str] = lambda s: f"{s * 1000:8.1f} ms"  # noqa: E731
    f = result["fleet"]
    print(
        f"\nfleet: {f['agents']} agents, {f['changes']} changes (goal: p99 under {GOAL_P99_S:g} s)"
    )
    rows = (
        ("write (set_desired)", "write_s"),
        ("return -> last agent", "last_agent_from_return_s"),
        ("return -> each agent", "per_agent_from_return_s"),
        ("start -> last agent", "last_agent_from_start_s"),
        ("start -> each agent", "per_agent_from_start_s"),
    )
    for label, key in rows:
        c = f[key]
        print(f"  {label:22s} p50 {ms(c['p50'])}  p99 {ms(c['p99'])}  max {ms(c['max'])}")
    early = -f["min_per_agent_from_return_s"]
    if early > 0:
        print(f"  (an agent saw a change up to {ms(early).strip()} before its write returned)")
    p99 = f["last_agent_from_return_s"]["p99"]
    verdict = "met" if p99 < GOAL_P99_S else "NOT met"
    print(f"  goal (return -> last agent, p99 under {GOAL_P99_S:g} s) {verdict};", end="")
    print(f" {f['missed']} agent-changes never seen")
    print(f"  watches opened again after the start: {f['retries_after_start']}")
    print(f"  etcd CPU per change {f['etcd_cpu_s_per_change'] * 1000:.0f} ms")
    print(
        f"  idle {f['idle_s']:g}s: etcd {f['etcd_idle_cpu_share'] * 100:.1f}% of a core,"
        f" the agents {f['agents_idle_cpu_share'] * 100:.1f}%"
    )
    c = result["controller"]
    print(f"\ncontroller: {c['volumes']} volumes, {c['reporters']} reporting agents")
    print(f"  first cycle {ms(c['first_cycle_s'])}  ({c['store_calls_first']} store calls)")
    k = c["cycle_s"]
    print(f"  cycle       p50 {ms(k['p50'])}  max {ms(k['max'])}  ({c['cycles'] - 1} cycles)")
    by = ", ".join(f"{n} {m}" for m, n in c["store_calls_by_method"].items())
    print(f"  store calls per cycle {c['store_calls']}: {by}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--spacing", type=float, default=1.0)
    parser.add_argument("--idle", type=float, default=25.0)
    parser.add_argument("--volumes", type=int, default=200)
    parser.add_argument("--reporters", type=int, default=3)
    parser.add_argument("--cycles", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    os.environ[netguard.ENV] = "1"  # loopback only
    with tempfile.TemporaryDirectory() as folder:
        server = EtcdServer(Path(folder) / "etcd")
        server.start()
        try:
            result = {"fleet": fleet(server, args)}
            result["controller"] = controller(server, args, Path(folder) / "volumes")
        finally:
            server.stop()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        show(result)


if __name__ == "__main__":
    main()
