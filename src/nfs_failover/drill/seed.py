"""The seed article's own setup, replayed on the lab: the other half of ``--compare seed``.

No controller, no agent. Each client host gets the article's autofs configuration as
written (``/misc /etc/auto.misc --timeout 10`` and one ``crr`` line listing both
servers, the source first), replication runs on its schedule and is left as it is (the
destination read-only), and the break is done by hand as the article says: the drill
does it ``--operator-delay`` after the outage. The same applications, the same outage
and the same restore as the nfs-failover run; then the figures the comparison needs.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from nfs_failover.config import Mode
from nfs_failover.drill import figures
from nfs_failover.drill.guests import GuestWorkload, GuestWorkloadError, until_warm
from nfs_failover.drill.model import ClientFigures
from nfs_failover.lab.automount import GuestAutomount
from nfs_failover.lab.guest_machine import GuestMachine
from nfs_failover.lab.lab import Lab
from nfs_failover.pacing import Deadline, Pacer
from nfs_failover.replication.local import LocalProvider

if TYPE_CHECKING:
    from nfs_failover.drill.run import Drill

SEED_TIMEOUT = 10  # the article's --timeout
AFTER_RESTORE = 2 * SEED_TIMEOUT + 5.0  # seconds: room for automount to expire and remount


def seed_map_lines(key: str, options: str, source: str, destination: str) -> tuple[str, str]:
    """The article's master line and map line, for the lab's two exports."""
    return (
        f"/misc /etc/auto.nfs-failover --timeout {SEED_TIMEOUT}\n",
        f"{key} -fstype=nfs,{options} {source} {destination}\n",
    )


class SeedRun:
    """One run of the seed's setup on a lab whose zones and client hosts are up."""

    def __init__(self, drill: Drill, provider: LocalProvider, key: PurePosixPath) -> None:
        self.drill = drill
        self.provider = provider
        self.key = key
        self.lab: Lab = drill.lab

    def write_maps(self, source: str, destination: str) -> None:
        master, line = seed_map_lines(
            self.key.name, self.drill.options.options, source, destination
        )
        for guest in self.drill.guests:
            root = guest.files_root
            (root / "etc/auto.master.d").mkdir(parents=True, exist_ok=True)
            (root / "etc/auto.master.d/nfs-failover.autofs").write_text(master)
            (root / "etc/auto.nfs-failover").write_text(line)
            GuestMachine(guest).reload_automount(Path("/run/autofs.pid"), systemd=False)

    async def run(self, names: dict[str, str], restore_after: float) -> list[ClientFigures]:
        """The seed's story; ``names``: HOST:/PATH -> replica name, the source first."""
        source, destination = names
        d, o = self.drill, self.drill.options
        await asyncio.to_thread(self.write_maps, source, destination)
        await asyncio.gather(
            *(
                asyncio.to_thread(GuestAutomount(g).wait_mounted_root, self.key.parent)
                for g in d.guests
            )
        )
        stop = asyncio.Event()
        schedule = asyncio.create_task(self.provider.serve(stop))
        workloads = [
            GuestWorkload(g, self.key, d.run_id + "s", read_only=False, hang_after=o.hang_after)
            for g in d.guests
        ]
        at: dict[str, float] = {}
        try:
            await asyncio.gather(*(w.start() for w in workloads))
            d.workloads = workloads
            # Not "working on zone 1": as written, automount picks the server that answers
            # its ping first, and that may be the read-only destination.
            await _until_answered(workloads, max(120.0, o.phase_timeout))
            await until_warm(workloads, max(120.0, o.phase_timeout))
            await asyncio.sleep(o.steady)
            await asyncio.to_thread(self.lab.outage, "az1")
            at["outage"] = time.time()
            d.say(f"seed setup: zone 1 cut off; the operator breaks in {o.operator_delay:g}s")
            await asyncio.sleep(o.operator_delay)
            await self.provider.break_(timeout=o.phase_timeout)
            at["break"] = time.time()
            d.say("seed setup: the operator broke the replication (dest1 writable)")
            await asyncio.sleep(max(at["outage"] + restore_after - time.time(), 0.0))
            await asyncio.to_thread(self.lab.restore, "az1")
            at["restore"] = time.time()
            d.say(f"seed setup: zone 1 restored; watching {AFTER_RESTORE:g}s")
            await asyncio.sleep(AFTER_RESTORE)
        finally:
            await asyncio.gather(*(w.stop() for w in workloads), return_exceptions=True)
            stop.set()
            await asyncio.gather(schedule, return_exceptions=True)
            await asyncio.to_thread(self.lab.restore, "az1")
        final = self.lab.zone(names[source]).folder  # where the seed's clients end
        view = figures.Volume(names, source, destination, final, {})
        instants = figures.Instants(d.t0, at.get("outage"), at.get("restore"), None)
        return [
            await asyncio.to_thread(
                figures.client_figures,
                w.client.name,
                w.records(),
                instants,
                view,
                prefix=w.prefix,
                read_only=o.mode is Mode.READ_ONLY,
            )
            for w in workloads
        ]


async def _until_answered(workloads: list[GuestWorkload], timeout: float) -> None:
    """Until every client's applications have had an answer, success or not."""
    pacer = Pacer.every(0.2, Deadline(timeout))
    while not all(any(op.end is not None for op in w.records().ops) for w in workloads):
        if not await pacer.pause():
            raise GuestWorkloadError(f"the seed setup's applications had no answer in {timeout:g}s")
