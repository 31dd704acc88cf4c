"""The drill: the seed's whole failover cycle on the local lab, measured and verified.

It brings the lab up (or reuses it) with its client hosts, pairs the two zones with the
local replication engine, and runs the controller in this process with one agent per
client host, as ``nfs-failover run`` does on a single host. In every client host, real
applications work through ``/misc/crr``, which the real automount mounts with the kernel
NFS client from the agent's maps (``lab.guest_workload``): a writer that ``fsync``s, a
reader, and ``sqlite3``. Then: optional short outages (flaps) that must not fail over;
zone 1 cut off until the controller fails over and every client writes on zone 2; zone 1
restored, the clients staying on zone 2; a failback; and the checks: every acknowledged
write and committed row on the final source or preserved, the database intact, no stale
read, no instant with two writable replicas offered, the replication mirrored in its
original direction again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import PurePosixPath
from typing import Any

import yaml

from nfs_failover import ganesha
from nfs_failover.agent import Agent
from nfs_failover.config import Config, Mode, Volume, validate_config
from nfs_failover.controller.loop import Controller
from nfs_failover.drill import figures, journal, verify
from nfs_failover.drill.guests import GuestWorkload, Op, until_warm
from nfs_failover.drill.journal import FAILOVER_KINDS
from nfs_failover.drill.model import (
    Check,
    ClientFigures,
    DrillReport,
    Mark,
    Phase,
    Sample,
    Summary,
)
from nfs_failover.drill.monitor import SplitBrainMonitor
from nfs_failover.drill.options import DrillError, DrillOptions
from nfs_failover.drill.seed import SeedRun
from nfs_failover.errors import NfsFailoverError
from nfs_failover.lab import guest_workload
from nfs_failover.lab.automount import GuestAutomount
from nfs_failover.lab.guest_machine import GuestMachine, client_config
from nfs_failover.lab.lab import Lab
from nfs_failover.pacing import Deadline, Pacer
from nfs_failover.replication.local import LocalProvider
from nfs_failover.store import Event, SqliteStore, Store

PREFIX = "drill-"
SEED_FILES = 40  # files a read-only drill writes first, to read them back later
STARTUP_TIMEOUT = 120.0  # seconds for every client's applications to work on zone 1
SEED_NOTE = (
    "Compared with the seed's own setup, run first on the same lab: its auto.misc line "
    "listing both servers, --timeout 10, no nfs-failover; replication left as it is and "
    "broken by hand {delay:g}s after the outage; zone 1 restored {restore:g}s after the "
    "outage in both runs."
)
NOTE_CLIENTS = (
    "Clients: {n} client hosts (VMs with Debian's kernel). In each, the real automount "
    "mounts {key} with the kernel NFS client ({options}); a writer (fsync), a reader and "
    "sqlite3 work through it under a watchdog that kills and restarts a process whose "
    "operation has not returned in {hang:g}s. The agent of each client runs in the "
    "drill's process and reaches its guest through the lab's command server."
)


@dataclass
class Live:
    """What the drill is doing now, for a progress display (read from another thread)."""

    phase: str = "starting"
    started: float = field(default_factory=time.time)
    replica: str | None = None
    ok: int = 0
    failed: int = 0
    decision: str = ""
    events: list[str] = field(default_factory=list)


Say = Callable[[str], None]


class Drill:
    def __init__(self, lab: Lab, options: DrillOptions, *, say: Say | None = None) -> None:
        self.lab = lab
        self.options = options
        self.live = Live()
        self._say = say or (lambda _m: None)
        self.workdir = lab.state_dir / "drill"
        self.guests = [lab.client(f"client{n}") for n in range(1, options.clients + 1)]
        self.run_id = uuid.uuid4().hex[:6]
        self.t0 = time.time()
        self.marks: list[Mark] = []
        self.phases: list[Phase] = []
        self.monitor: SplitBrainMonitor | None = None
        self.workloads: list[GuestWorkload] = []
        self.actions: dict[str, list[tuple[float, str, str]]] = {g.name: [] for g in self.guests}
        self.at: dict[str, float] = {}  # epoch seconds of the drill's instants
        self.false_failovers = 0
        self.failure: str | None = None  # why the drill stopped before its end

    # -- helpers -----------------------------------------------------------------------

    def say(self, message: str) -> None:
        self.live.events.append(f"{time.time() - self.t0:6.1f}s  {message}")
        self._say(message)

    def mark(self, name: str, label: str, at: float | None = None) -> float:
        at = time.time() if at is None else at
        self.marks.append(Mark(name, label, round(at - self.t0, 3)))
        return at

    def phase(self, name: str, label: str, start: float, end: float) -> None:
        self.phases.append(Phase(name, label, round(start - self.t0, 3), round(end - self.t0, 3)))

    @contextlib.contextmanager
    def _phase(self, name: str, label: str) -> Iterator[None]:
        self.live.phase = label
        start = time.time()
        try:
            yield
        finally:
            self.phase(name, label, start, time.time())

    def _acted(self, client: str) -> Callable[[str, str, float], None]:
        def acted(what: str, detail: str, at: float) -> None:
            self.actions[client].append((at, what, detail))

        return acted

    # -- the drill ---------------------------------------------------------------------

    async def run(self) -> DrillReport:
        self.t0 = self.live.started = time.time()
        for zone in self.lab.zones:  # an outage left by an earlier run would stop `up`
            self.lab.restore(zone.name)
        was_up = self.lab.status().up
        try:
            with self._phase("setup", "lab up"):
                self.say("bringing the lab up" if not was_up else "reusing the running lab")
                up = functools.partial(self.lab.up, self.say, clients=self.options.clients)
                await asyncio.to_thread(up)
                await asyncio.to_thread(self._reset)
            seed = await self._run_seed() if self.options.compare == "seed" else None
            report = await self._run()
            if seed is not None:
                report.comparison = verify.compare(seed, report.clients)
                o = self.options
                report.notes.append(
                    SEED_NOTE.format(delay=o.operator_delay, restore=o.restore_after)
                )
            return report
        except NfsFailoverError as exc:  # the lab, its client hosts or the pair failed us
            self.failure = str(exc)
            self.say(f"stopped: {exc}")
            return self._unfinished()
        finally:
            if not was_up and not self.options.keep:
                self.say("taking the lab down (it was not up before the drill; --keep keeps it)")
                await asyncio.to_thread(self.lab.down)

    def _unfinished(self) -> DrillReport:
        """The report of a drill that stopped before its story began (or mid-way outside
        the story's own checks): the reason, and what it had done so far."""
        o = self.options
        summary = Summary(passed=False, mode=o.mode.value, grace_s=o.grace, flaps=o.flaps)
        return DrillReport(
            summary=summary,
            checks=[Check("the drill ran to its end", False, self.failure or "stopped")],
            phases=self.phases,
            marks=self.marks,
            started_at=self.t0,
            notes=[self._note_clients()],
        )

    def _note_clients(self) -> str:
        o = self.options
        return NOTE_CLIENTS.format(
            n=o.clients, key="/misc/crr", options=o.options, hang=o.hang_after
        )

    def _reset(self) -> None:
        """A clean pair: both zones reachable, site1 writable, no earlier drill's state."""
        for zone in self.lab.zones:
            self.lab.restore(zone.name)
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        # The client hosts start afresh too: their maps and the state their agents last
        # applied belong to the earlier drill's store, which is gone.
        for guest in self.guests:
            shutil.rmtree(guest.files_root, ignore_errors=True)
            shutil.rmtree(guest.folder / "drill", ignore_errors=True)
        self.workdir.mkdir(mode=0o700, parents=True)
        for zone in self.lab.zones:
            for old in zone.folder.glob(f"{PREFIX}*"):
                old.unlink()
            if ganesha.set_access(zone.conf, zone.folder, read_only=zone.role != "source"):
                ganesha.reload(zone.pidfile)

    def config(self) -> Config:
        """The lab's config with the drill's mode, timings, and a store of its own: the
        drill's values go in as the types they are (seconds as timedeltas), not as text."""
        data: dict[str, Any] = yaml.safe_load(self.lab.config_path.read_text())
        o = self.options
        volume = data["volumes"][0]
        volume["mode"] = o.mode.value
        volume["mount"]["options"] = o.options
        volume["replication"]["schedule"] = timedelta(seconds=o.schedule)
        volume["replication"]["state_dir"] = self.workdir / "replication"
        data["policy"].update(
            probe_interval=timedelta(seconds=o.probe_interval),
            probe_timeout=timedelta(seconds=o.probe_timeout),
            failover_after=timedelta(seconds=o.grace),
            recover_after=timedelta(seconds=1),
            max_lag=timedelta(seconds=max(60.0, 3 * o.schedule)),
            failback="manual",
        )
        data["autofs"]["root"] = self.workdir / "client"
        data["autofs"]["pidfile"] = self.workdir / "client" / "automount.pid"
        data["store"] = f"sqlite://{self.workdir / 'state.db'}"
        return validate_config(data, source=f"{self.lab.config_path} (drill)")

    async def _run(self) -> DrillReport:
        config = self.config()
        volume = config.volumes[0]
        store = SqliteStore(self.workdir / "state.db")
        provider = LocalProvider(volume)
        client_view = client_config(config)
        agents = [
            Agent(
                client_view,
                store,
                name=g.name,
                machine=GuestMachine(g),
                on_action=self._acted(g.name),
            )
            for g in self.guests
        ]
        controller = Controller(
            config, store, name="drill-controller", providers={volume.name: provider}, agents=agents
        )
        key = PurePosixPath(client_view.autofs.mount_root) / (volume.mount.map_key or volume.name)
        read_only = self.options.mode is Mode.READ_ONLY
        self.workloads = [
            GuestWorkload(
                g, key, self.run_id, read_only=read_only, hang_after=self.options.hang_after
            )
            for g in self.guests
        ]
        # Fresh clients: a mount left by an earlier drill keeps its options (ro, another
        # NFS version) whatever the new maps say, until it is gone.
        await asyncio.gather(
            *(asyncio.to_thread(GuestAutomount(g).unmount, key) for g in self.guests)
        )
        with self._phase("baseline", "baseline transfer"):
            if read_only:
                self._seed_files(volume)
            self.say(f"baseline transfer {volume.replicas[0].name} -> {volume.replicas[1].name}")
            await provider.transfer_now(timeout=self.options.phase_timeout)
            # The maps exist before the clients' daemons read them.
            await asyncio.gather(*(agent.cycle() for agent in agents))
        await asyncio.gather(
            *(
                asyncio.to_thread(GuestAutomount(g).wait_mounted_root, key.parent)
                for g in self.guests
            )
        )
        stop = asyncio.Event()
        loop_task = asyncio.create_task(controller.run(stop))
        self.monitor = SplitBrainMonitor(self.lab, agents, volume, self.t0)
        sampler = asyncio.create_task(self.monitor.run(stop))
        try:
            self.say(f"starting the applications in {len(self.guests)} client hosts on {key}")
            await asyncio.gather(*(w.start() for w in self.workloads))
            try:
                await self._cycle(volume, controller)
            finally:
                await asyncio.gather(*(w.stop() for w in self.workloads), return_exceptions=True)
        finally:
            stop.set()
            await asyncio.gather(loop_task, sampler, return_exceptions=True)
            await controller.close()
            await asyncio.gather(*(agent.close() for agent in agents))
        return await self._report(volume, store, provider)

    async def _run_seed(self) -> list[ClientFigures]:
        """The seed article's setup on the same lab, applications, outage and restore."""
        o = self.options
        assert o.restore_after is not None
        with self._phase("seed", "the seed's own setup"):
            self.say("first the seed's own setup: its auto.misc line, the break by hand")
            config = self.config()
            volume = config.volumes[0]
            provider = LocalProvider(volume)
            key = PurePosixPath("/misc") / (volume.mount.map_key or volume.name)
            await asyncio.gather(
                *(asyncio.to_thread(GuestAutomount(g).unmount, key) for g in self.guests)
            )
            try:
                await provider.transfer_now(timeout=o.phase_timeout)
                names = {str(r.export): r.name for r in volume.replicas}
                found = await SeedRun(self, provider, key).run(names, o.restore_after)
            finally:
                await provider.close()
                self.workloads = []
        await asyncio.to_thread(self._reset)
        self.say("now the same with nfs-failover")
        return found

    def _seed_files(self, volume: Volume) -> None:
        """Read-only: the files each client reads back, written on the source's folder."""
        folder = self.lab.zone(volume.replicas[0].name).folder
        for workload in self.workloads:
            for seq in range(1, SEED_FILES + 1):
                path = folder / guest_workload.file_name(workload.prefix, seq)
                path.write_bytes(guest_workload.content(workload.prefix, seq))

    async def _cycle(self, volume: Volume, controller: Controller) -> None:
        """The story, instant by instant, into ``self.at``; a DrillError stops it where it
        stands, and the report says where."""
        o = self.options
        source, destination = (str(r.export) for r in volume.replicas)
        name = volume.name
        at = self.at
        watch = asyncio.create_task(self._follow(controller, name))
        try:
            with self._phase("steady", "clients on zone 1"):
                # The applications' first start is no part of the story: it has its own
                # deadline (Python starts slowly under software emulation).
                startup = max(STARTUP_TIMEOUT, o.phase_timeout)
                first = await self._until_ok(
                    source, time.time() - 1, "zone 1", every_kind=True, timeout=startup
                )
                self.mark("client-start", "clients on zone 1", first)
                self.say(f"every client works on {source}")
                await until_warm(self.workloads, startup)
                # The outage comes at a random moment of the probe cycle, as real ones do.
                await asyncio.sleep(o.steady + random.uniform(0, o.probe_interval))  # noqa: S311
            await self._flaps(controller, name)
            # The outage.
            self.live.phase = "zone 1 cut off"
            await asyncio.to_thread(self.lab.outage, "az1")
            at["outage"] = self.mark("outage", "zone 1 cut off")
            self.say(f"zone 1 cut off (ports 111, 635, 2049 dropped); grace {o.grace:g}s")
            at["first2"] = await self._until_ok(destination, at["outage"], "zone 2")
            self.mark("first-op-zone2", f"every client's first {o.op} on zone 2", at["first2"])
            self.say(
                f"every client {o.op}s on zone 2 "
                f"{at['first2'] - at['outage']:.2f}s after the outage"
            )
            await self._until_done(controller, name, FAILOVER_KINDS, at["outage"])
            events = self._journal(controller, name)
            span = journal.workflow_span(events, FAILOVER_KINDS, at["outage"])
            self.phase("failover", "failover workflow", *span)
            await asyncio.sleep(o.steady)
            if o.restore_after is not None:  # the seed run's restore, at the same moment
                await asyncio.sleep(max(at["outage"] + o.restore_after - time.time(), 0.0))
            # Zone 1 returns; clients stay where they are until the failback.
            await asyncio.to_thread(self.lab.restore, "az1")
            at["restore"] = self.mark("restore", "zone 1 restored")
            self.phase("outage", "zone 1 cut off", at["outage"], at["restore"])
            self.say("zone 1 restored; the clients stay on zone 2")
            with self._phase("restored", "zone 1 back, clients stay on zone 2"):
                await asyncio.sleep(max(o.steady, 2 * o.probe_interval + o.probe_timeout))
            await self._failback(name, source, controller)
        except (NfsFailoverError, TimeoutError) as exc:
            self.failure = str(exc) or f"timed out in phase {self.live.phase!r}"
            self.say(f"drill stopped: {self.failure}")
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
            await asyncio.to_thread(self.lab.restore, "az1")

    async def _failback(self, name: str, source: str, controller: Controller) -> None:
        o, at = self.options, self.at
        # The failback, as an operator asks for it (failback: manual).
        self.live.phase = "failback"
        at["failback"] = self.mark("failback-start", "failback requested")
        self.say("failback requested")
        await asyncio.wait_for(controller.request("failback", name), o.phase_timeout)
        at["failback_done"] = self.mark("failback-done", "failback done")
        self.phase("failback", "failback workflow", at["failback"], at["failback_done"])
        self.say(f"failback done in {at['failback_done'] - at['failback']:.2f}s")
        at["first1"] = await self._until_ok(source, at["failback"], "zone 1 again")
        self.mark("first-op-zone1", f"every client back on zone 1 ({o.op})", at["first1"])
        self.say(
            f"every client back on zone 1, "
            f"{at['first1'] - at['failback']:.2f}s after the failback began"
        )
        with self._phase("back", "clients back on zone 1"):
            await asyncio.sleep(o.steady)

    async def _flaps(self, controller: Controller, volume: str) -> None:
        """Outages shorter than the grace period: each must change nothing."""
        o = self.options
        if not o.flaps:
            return
        start = time.time()
        gap = max(1.5, 2 * o.probe_interval + o.probe_timeout + 0.5)
        self.live.phase = f"flaps: {o.flaps} outages of {o.flap_seconds:g}s"
        self.say(f"{o.flaps} flaps: zone 1 cut off {o.flap_seconds:g}s, back {gap:g}s")
        for index in range(o.flaps):
            self.live.phase = f"flap {index + 1}/{o.flaps}"
            await asyncio.to_thread(self.lab.outage, "az1")
            await asyncio.sleep(o.flap_seconds)
            await asyncio.to_thread(self.lab.restore, "az1")
            await asyncio.sleep(gap)
        self.phase("flaps", f"{o.flaps} flaps of {o.flap_seconds:g}s", start, time.time())
        events = self._journal(controller, volume)
        started = journal.workflows_since(events, FAILOVER_KINDS, start)
        self.false_failovers = len(started)
        self.say(f"flaps over: {len(started)} failovers started (expected 0)")
        if started:
            raise DrillError(
                f"a flap of {o.flap_seconds:g}s (grace {o.grace:g}s) started a failover"
            )

    # -- waiting -----------------------------------------------------------------------

    def _useful(self, op: Op) -> bool:
        """An operation that shows the client's volume works for it: an acknowledged
        write (a file or a row) in read-write mode, a read in read-only mode."""
        read_only = self.options.mode is Mode.READ_ONLY
        kinds = figures.READ_KINDS if read_only else figures.WRITE_KINDS
        return op.ok and op.end is not None and op.kind in kinds

    async def _until_ok(
        self,
        export: str,
        after: float,
        what: str,
        *,
        every_kind: bool = False,
        timeout: float | None = None,
    ) -> float:
        """When the last client's first useful operation on ``export`` begun after
        ``after`` ended: every client works there (``every_kind``: each of its
        applications does)."""
        timeout = self.options.phase_timeout if timeout is None else timeout
        pacer = Pacer.every(0.1, Deadline(timeout))
        need = 1 if self.options.mode is Mode.READ_ONLY or not every_kind else 2
        while True:
            firsts: dict[str, float | None] = {}
            for workload in self.workloads:
                ops = [
                    op
                    for op in workload.records().ops
                    if self._useful(op) and op.server == export and op.begin > after
                ]
                ends = [op.end for op in ops if op.end is not None]
                enough = len({op.kind for op in ops}) >= need
                firsts[workload.client.name] = min(ends) if ends and enough else None
            if all(f is not None for f in firsts.values()):
                return max(f for f in firsts.values() if f is not None)
            if not await pacer.pause():
                break
        late = [name for name, first in firsts.items() if first is None]
        raise DrillError(
            f"not every client did a successful {self.options.op} on {what} ({export}) "
            f"within {timeout:g}s: {', '.join(late)} did not"
        )

    async def _until_done(
        self, controller: Controller, volume: str, kinds: tuple[str, ...], after: float
    ) -> float:
        pacer = Pacer.every(0.05, Deadline(self.options.phase_timeout))
        while True:
            last = controller.store.last_workflow(volume)
            if last and last.kind in kinds and last.status == "done" and last.updated > after:
                return last.updated
            if not await pacer.pause():
                break
        raise DrillError(f"no failover workflow finished within {self.options.phase_timeout:g}s")

    def _journal(self, controller: Controller, volume: str) -> list[Event]:
        return journal.events(controller.store, volume)

    async def _follow(self, controller: Controller, volume: str) -> None:
        """Keep the live view current, and say what the controller decides."""
        said = ""
        while True:
            ops = [op for w in self.workloads for op in w.records().ops]
            mounts = self.workloads[0].records().mounts if self.workloads else []
            self.live.replica = mounts[-1].server if mounts else None
            self.live.ok = sum(1 for op in ops if op.ok)
            self.live.failed = sum(1 for op in ops if not op.ok)
            decision = controller.decision(volume)
            if decision is not None:
                self.live.decision = str(decision)
                # Said once per kind of decision, not once per second of a countdown.
                gist = re.sub(r"[\d.:]+", "#", str(decision))
                if gist != said:
                    said = gist
                    self.say(f"controller: {decision}")
            await asyncio.sleep(0.5)

    # -- verification and figures ------------------------------------------------------

    async def _report(self, volume: Volume, store: Store, provider: LocalProvider) -> DrillReport:
        o = self.options
        self.live.phase = "verifying"
        source, destination = (str(r.export) for r in volume.replicas)
        names = {str(r.export): r.name for r in volume.replicas}
        preserved, listed = journal.preserved(store, volume.name)
        status = await provider.status(timeout=10.0)
        await provider.close()
        at = self.at
        events = journal.events(store, volume.name)
        detected, marks = journal.step_marks(events, at.get("outage"), at.get("failback"))
        for name, label, instant in marks:
            self.mark(name, label, instant)
        instants = figures.Instants(
            self.t0, at.get("outage"), at.get("restore"), at.get("failback")
        )
        view = figures.Volume(
            names, source, destination, self.lab.zone(volume.replicas[0].name).folder, preserved
        )
        records = {w.client.name: w.records() for w in self.workloads}
        clients = [
            await asyncio.to_thread(
                figures.client_figures,
                w.client.name,
                records[w.client.name],
                instants,
                view,
                prefix=w.prefix,
                read_only=o.mode is Mode.READ_ONLY,
                actions=self.actions[w.client.name],
            )
            for w in self.workloads
        ]
        ops = [op for r in records.values() for op in r.ops]
        restored, failback_at = at.get("restore", float("inf")), at.get("failback", 0.0)
        monitor = self.monitor
        evidence = verify.Evidence(
            options=o,
            volume=volume,
            clients=clients,
            at=dict(at),
            events=events,
            detected=detected,
            status=status,
            stayed=[op for op in ops if self._useful(op) and restored < op.begin < failback_at],
            preserved=listed,
            split_brain=monitor.instants if monitor else [],
            samples=monitor.samples if monitor else 0,
            false_failovers=self.false_failovers,
            failure=self.failure,
        )
        checks = verify.checks(evidence)
        samples = [
            Sample(
                round((op.end or op.begin) - self.t0, 3),
                names.get(op.server or "", op.server or "?"),
                "read" if op.kind == "read" else "write",
                op.ok,
                op.client,
            )
            for op in ops
            if op.kind in ("write", "row", "read")
        ]
        notes = [
            self._note_clients(),
            f"Policy: probe every {o.probe_interval:g}s with a {o.probe_timeout:g}s deadline, "
            f"failover after {o.grace:g}s down, replication every {o.schedule:g}s.",
            "Zone outage: nftables in the zone's namespace drops TCP and UDP to ports 111, "
            "635 and 2049, like the seed's NSG rule.",
            f"Preserved files: {listed}.",
        ]
        workload = (
            "writer (4 KiB files, fsync), reader, sqlite3 (a row per transaction)"
            if o.mode is Mode.READ_WRITE
            else "reader of files written before"
        )
        zones = {
            f"{r.name} ({z.name})": str(r.export)
            for r, z in zip(volume.replicas, self.lab.zones, strict=True)
        }
        return DrillReport(
            summary=verify.summary(evidence, passed=all(c.passed for c in checks)),
            checks=checks,
            phases=sorted(self.phases, key=lambda p: p.start),
            marks=sorted(self.marks, key=lambda m: m.at),
            samples=samples,
            started_at=self.t0,
            notes=notes,
            clients=clients,
            lab={
                "state folder": str(self.lab.state_dir),
                "volume": volume.name,
                **zones,
                "clients": ", ".join(f"{g.name} ({g.address})" for g in self.guests),
                "mount options": o.options,
                "workload": workload,
            },
        )
