"""What the lab's client hosts cost and what the real NFS client sees, on a lab of its own.

    .venv/bin/python bench/client_hosts.py [--boots 5] [--lookups 5]

Prints, each as a median with its range:
- the boot time of one client host (from `vng` start until its command server answers)
  and the memory its qemu process holds;
- the time from `ls /misc/crr` to mounted, on the agent's map (both zones up);
- the lookup time of a fresh key while zone 1 is cut off, on the seed's own map (both
  servers listed, no weights): the seed's "10 second" problem, with the kernel client;
- the time from zone 1's outage to the healed mount, with the agent's default settings
  (the lab's policy, read-only volume so that both replicas stay offered).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from pathlib import Path, PurePosixPath

from nfs_failover import netguard
from nfs_failover.agent import Agent
from nfs_failover.config import Mode, load_config
from nfs_failover.lab import Lab
from nfs_failover.lab.automount import GuestAutomount
from nfs_failover.lab.clients import qemu_pids
from nfs_failover.lab.guest_machine import GuestMachine, client_config
from nfs_failover.steering.healing import HealOutcome
from nfs_failover.store import SqliteStore

KEY = PurePosixPath("/misc/crr")
TAG, SLOT = "b", 50


def figure(name: str, values: list[float], unit: str = "s") -> None:
    shown = f"{statistics.median(values):.2f}{unit} (range {min(values):.2f}-{max(values):.2f})"
    print(f"{name:<44} {shown}  n={len(values)}", flush=True)


def boots(lab: Lab, count: int) -> None:
    seconds, memory = [], []
    for _ in range(count):
        lab.down()
        started = time.monotonic()
        lab.up(clients=1)
        (status,) = lab.status().clients
        seconds.append(status.boot_seconds or time.monotonic() - started)
        rss = [_rss_mib(pid) for pid in qemu_pids(lab.client("client1").tap)]
        memory.append(max(rss))
    figure("boot of one client host", seconds)
    figure("memory of its qemu process (RSS)", memory, " MiB")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def agent_for(lab: Lab, mode: Mode, store: SqliteStore) -> Agent:
    config = client_config(load_config(lab.config_path))
    volume = config.volumes[0].model_copy(update={"mode": mode})
    config = config.model_copy(update={"volumes": (volume,)})
    client = lab.client("client1")
    return Agent(config, store, name=client.name, machine=GuestMachine(client))


def lookups(lab: Lab, daemon: GuestAutomount, count: int) -> None:
    seconds = []
    for _ in range(count):
        daemon.unmount(KEY)
        started = time.monotonic()
        assert daemon.access(KEY).ok
        seconds.append(time.monotonic() - started)
        assert daemon.mounted(KEY) == lab.zones[0].export
    figure("ls /misc/crr to mounted (zones up)", seconds)


def seed_lookups(lab: Lab, daemon: GuestAutomount, count: int) -> None:
    client = lab.client("client1")
    site1, dest1 = (z.export for z in lab.zones)
    (client.files_root / "etc/auto.nfs-failover").write_text(
        f"crr -fstype=nfs,rw,nosuid,hard,tcp,timeo=60,vers=3,nolock {site1} {dest1}\n"
    )
    daemon.reload()
    lab.outage("az1")
    seconds = []
    try:
        for _ in range(count):
            daemon.unmount(KEY)
            time.sleep(1.5)  # past the key's negative cache of the last failure, if any
            started = time.monotonic()
            daemon.access(KEY)
            seconds.append(time.monotonic() - started)
    finally:
        lab.restore("az1")
        daemon.unmount(KEY)
    figure("fresh lookup, zone 1 cut off (seed's map)", seconds)


async def outage_to_healed(lab: Lab, daemon: GuestAutomount, store: SqliteStore) -> float:
    agent = agent_for(lab, Mode.READ_ONLY, store)
    await agent.cycle()
    await asyncio.to_thread(daemon.wait_mounted_root, KEY.parent)
    await asyncio.to_thread(daemon.unmount, KEY)
    assert (await asyncio.to_thread(daemon.access, KEY)).ok
    interval = agent.config.effective_policy(agent.config.volumes[0]).probe_interval
    lab.outage("az1")
    started = time.monotonic()
    try:
        while True:  # paced as Agent.run paces its cycles
            began = time.monotonic()
            cycle = await agent.cycle()
            if any(h.outcome is HealOutcome.UNMOUNTED for h in cycle.heals):
                return time.monotonic() - started
            if time.monotonic() - started > 120:
                raise SystemExit("no heal within 120 s")
            await asyncio.sleep(max(interval.total_seconds() - (time.monotonic() - began), 0))
    finally:
        lab.restore("az1")
        await agent.close()
        await asyncio.to_thread(daemon.unmount, KEY)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--boots", type=int, default=5)
    parser.add_argument("--lookups", type=int, default=5)
    args = parser.parse_args()
    os.environ[netguard.ENV] = "1"  # the lab's addresses and loopback only
    lab = Lab(Path("/tmp/nfo-bench-clients"), tag=TAG, slot=SLOT)
    try:
        boots(lab, args.boots)
        store = SqliteStore(lab.state_dir / "bench.db")
        asyncio.run(agent_for(lab, Mode.READ_WRITE, store).cycle())
        daemon = GuestAutomount(lab.client("client1"))
        daemon.wait_mounted_root(KEY.parent)
        lookups(lab, daemon, args.lookups)
        seed_lookups(lab, daemon, 3)
        healed = [asyncio.run(outage_to_healed(lab, daemon, store)) for _ in range(3)]
        figure("zone 1 outage to healed mount (agent)", healed)
    finally:
        lab.down()


if __name__ == "__main__":
    main()
