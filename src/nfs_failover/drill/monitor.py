"""The drill's split-brain monitor: two writable replicas offered to clients at once.

Every 100 ms it reads the map each client host's agent wrote and the access of each
zone's export; an instant at which one map offers two replicas whose exports both take
writes is split brain.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Sequence

from nfs_failover import ganesha
from nfs_failover.agent import Agent
from nfs_failover.config import Volume
from nfs_failover.lab.lab import Lab

EVERY = 0.1  # seconds between samples


class SplitBrainMonitor:
    def __init__(self, lab: Lab, agents: Sequence[Agent], volume: Volume, t0: float) -> None:
        self.zones = {z.replica: z for z in lab.zones}
        self.maps = [a.machine.files_path(a.config.autofs.map_file) for a in agents]
        self.volume = volume
        self.t0 = t0
        self.instants: list[float] = []  # seconds since t0 with two writable replicas offered
        self.samples = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Sample until ``stop`` is set."""
        while not stop.is_set():
            self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), EVERY)

    def sample(self) -> None:
        replicas = self.volume.replicas
        access = {
            r.name: ganesha.export_access(self.zones[r.name].conf, self.zones[r.name].folder)
            for r in replicas
        }
        for map_file in self.maps:
            text = map_file.read_text() if map_file.exists() else ""
            writable = [
                r.name
                for r in replicas
                if offers(text, r.export.host, r.export.path) and access[r.name] == "rw"
            ]
            if len(writable) > 1:
                self.instants.append(time.time() - self.t0)
        self.samples += 1


def offers(map_text: str, host: str, path: str) -> bool:
    """Whether an autofs map offers ``host:path`` (with or without a weight)."""
    pattern = rf"(?:^|[\s,]){re.escape(host)}(?:\(\d+\))?:{re.escape(path)}(?:\s|$)"
    return re.search(pattern, map_text, re.MULTILINE) is not None
