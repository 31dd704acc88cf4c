"""A running agent learns a change of the desired state through the store's watch, on
every store: with a probe interval of an hour, only the watch can bring the change to
its map before the next cycle."""

from __future__ import annotations

import asyncio
from pathlib import Path

from nfs_failover.agent import Agent
from nfs_failover.config import Config, parse_config
from nfs_failover.desired import failed_over
from nfs_failover.pacing import Deadline
from tests.store.conftest import Backend

WAIT = 30.0

# Loopback exports only: the agent probes them (nothing answers there; the probes fail).
CONFIG = """\
volumes:
  - name: crr
    mode: read-write
    replicas:
      - {name: site1, export: "127.0.0.1:/crr-site1"}
      - {name: dest1, export: "127.0.0.2:/crr-dest1"}
    replication: {provider: local, source_path: /srv/az1/vol, destination_path: /srv/az2/vol}
policy: {probe_interval: 1h, probe_timeout: 1s, failover_after: 2h, recover_after: 2h}
"""


def agent_config(root: Path) -> Config:
    config = parse_config(CONFIG, "agent.yaml")
    autofs = config.autofs.model_copy(update={"root": root, "pidfile": root / "automount.pid"})
    return config.model_copy(update={"autofs": autofs})


def test_a_running_agent_rewrites_its_map_when_the_watch_brings_a_change(
    backend: Backend, tmp_path: Path
) -> None:
    config = agent_config(tmp_path / "client")
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("")
    map_file = config.autofs.under_root(config.autofs.map_file)
    writer = backend.open()

    async def map_says(host: str) -> bool:
        deadline = Deadline(WAIT)
        while not deadline.passed():
            if map_file.exists() and host in map_file.read_text():
                return True
            await asyncio.sleep(0.02)
        return False

    async def main() -> tuple[bool, bool, str]:
        agent = Agent(config, backend.open(), name="client1", mountinfo=mountinfo)
        stop = asyncio.Event()
        running = asyncio.create_task(agent.run(stop))
        try:
            first = await map_says("127.0.0.1")
            await asyncio.to_thread(
                writer.set_desired,
                failed_over(config.volumes[0], generation=1),
                expected_generation=None,
            )
            moved = await map_says("127.0.0.2")
            return first, moved, map_file.read_text()
        finally:
            stop.set()
            await asyncio.wait_for(running, WAIT)
            await agent.close()

    first, moved, text = asyncio.run(main())
    assert first, "the first map names the source"
    assert moved, "the watched change reached the map before the next cycle"
    assert "127.0.0.1" not in text  # the fenced source is gone
