"""Agents in the client hosts, on the lab's etcd: a desired-state change made on the host
reaches every client's map through the store's watch, while the agents' own cycle is ten
minutes away (no polling loop can have delivered it)."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest

from nfs_failover.desired import VolumeDesired, failed_over, normal
from nfs_failover.lab import Lab, guest_agent
from nfs_failover.lab.guest_agent import GuestAgent
from nfs_failover.steering.autofs_files import render
from nfs_failover.store import Store, open_store

pytestmark = pytest.mark.lab

CYCLE = timedelta(minutes=10)
START = 300.0  # the package's import alone takes a minute in a guest under emulation


def wait_reporting(store: Store, volume: str, agents: list[GuestAgent]) -> None:
    deadline = time.monotonic() + START
    names = {a.name for a in agents}
    while not names <= {r.agent for r in store.reports(volume)}:
        stopped = [a.name for a in agents if not guest_agent.running(a)]
        assert not stopped, f"agents exited: {stopped}; see {agents[0].log.parent}"
        assert time.monotonic() < deadline, f"no report from {names} within {START:g}s"
        time.sleep(0.5)


def change(store: Store, agents: list[GuestAgent], new: VolumeDesired) -> dict[str, float]:
    """Write ``new`` from the host; how long each client's map took to show it."""
    current = store.get_desired(new.volume)
    texts = {a.name: render(a.config, {new.volume: new}).map_text for a in agents}
    sent = time.monotonic()
    assert store.set_desired(new, expected_generation=current.generation if current else None)
    seen = guest_agent.wait_for_maps(agents, texts, timeout=CYCLE.total_seconds() / 4)
    return {name: at - sent for name, at in seen.items()}


def test_a_failover_reaches_every_client_host_through_the_watch(lab: Lab) -> None:
    prefix = f"/nfs-failover-test-{uuid.uuid4().hex[:8]}/"
    agents = [
        guest_agent.start(lab, client, interval=CYCLE, prefix=prefix)
        for client in lab.running_clients()
    ]
    config = agents[0].config
    volume = config.volumes[0]
    store = open_store(config.store, etcd=config.etcd)
    try:
        wait_reporting(store, volume.name, agents)
        start = normal(volume, config.effective_policy(volume).read_only_fallback)
        texts = {a.name: render(a.config, {volume.name: start}).map_text for a in agents}
        guest_agent.wait_for_maps(agents, texts, timeout=60.0)  # the first cycle wrote them

        over = change(store, agents, failed_over(volume, generation=1))
        back = change(store, agents, VolumeDesired(**{**vars(start), "generation": 2}))
        print(f"map changed after the desired state's: failover {over}, failback {back}")
        assert all(guest_agent.running(a) for a in agents)
        for agent in agents:
            log = agent.log.read_text()
            assert "Traceback" not in log, log
    finally:
        for agent in agents:
            guest_agent.stop(agent)
        store.close()
