"""Agents in the client hosts, on the lab's etcd: a desired-state change made on the host
reaches every client's map through the store's watch, while the agents' own cycle is ten
minutes away (no polling loop can have delivered it)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from nfs_failover.desired import VolumeDesired, failed_over, normal
from nfs_failover.lab import Lab, guest_agent
from nfs_failover.steering.autofs_files import render
from nfs_failover.store import open_store

pytestmark = pytest.mark.lab

CYCLE = timedelta(minutes=10)
START = 300.0  # the package's import alone takes a minute in a guest under emulation
CHANGE = CYCLE.total_seconds() / 4  # far below a cycle: only the watch can be this quick


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
        guest_agent.wait_reporting(store, volume.name, agents, timeout=START)
        start = normal(volume, config.effective_policy(volume).read_only_fallback)
        texts = {a.name: render(a.config, {volume.name: start}).map_text for a in agents}
        guest_agent.wait_for_maps(agents, texts, timeout=60.0)  # the first cycle wrote them

        over = guest_agent.change(store, agents, failed_over(volume, generation=1), CHANGE)
        back_to = VolumeDesired(**{**vars(start), "generation": 2})
        back = guest_agent.change(store, agents, back_to, CHANGE)
        print(f"map changed after the desired state's: failover {over}, failback {back}")
        assert all(guest_agent.running(a) for a in agents)
        for agent in agents:
            log = agent.log.read_text()
            assert "Traceback" not in log, log
    finally:
        for agent in agents:
            guest_agent.stop(agent)
        store.close()
