"""The drill: the seed's whole failover cycle on the local lab, measured and verified.

It brings the lab up (or reuses it), pairs its two zones with the local replication
engine, and runs the controller and the agent in this process, as ``nfs-failover run``
does on a single host. A client workload resolves the volume through the real automount
daemon reading the agent's maps and talks NFS to the replica it names (see
``drill.client``). Then: optional short outages (flaps) that must not fail over; zone 1
cut off until the controller fails over and the client writes on zone 2; zone 1
restored, the client staying on zone 2; a failback; and the checks: every acknowledged
write on the final source or preserved, no instant with two writable replicas offered,
the replication mirrored in its original direction again.
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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from nfs_failover import ganesha
from nfs_failover.agent import Agent
from nfs_failover.config import Config, Mode, Volume, parse_config
from nfs_failover.controller.loop import Controller
from nfs_failover.drill.client import AutofsClient, Lookup
from nfs_failover.drill.model import SUMMARY_KEYS, Check, DrillReport, Mark, Phase, Sample
from nfs_failover.errors import NfsFailoverError
from nfs_failover.lab.automount import GuestAutomount
from nfs_failover.lab.guest_machine import GuestMachine, client_config
from nfs_failover.lab.lab import Lab
from nfs_failover.lab.workload import Workload
from nfs_failover.replication.base import MirrorState
from nfs_failover.replication.local import LocalProvider
from nfs_failover.store import Event, SqliteStore

FAILOVER_KINDS = ("failover", "failover-read-only", "switchover")
FAILBACK_KINDS = ("failback", "failback-read-only")
PREFIX = "drill-"
SEED_FILES = 40  # files a read-only drill writes first, to read them back later
NO_KERNEL_NFS = (
    "The client picks its replica in client host client1 (a VM with Debian's kernel): a "
    "fresh access there makes the real automount mount the replica the agent's map offers "
    "with the kernel NFS client. The workload's NFS I/O then goes from the host through "
    "nfs-failover's own NFS client to that replica."
)


class DrillError(NfsFailoverError):
    """The drill could not run to its end (not the same as a failed verification)."""


@dataclass(frozen=True)
class DrillOptions:
    mode: Mode = Mode.READ_WRITE
    grace: float = 5.0  # failover_after, seconds
    schedule: float = 10.0  # replication interval, seconds
    flaps: int = 0
    flap_length: float | None = None  # default: 40 % of the grace period
    steady: float = 3.0  # seconds of workload on each side before moving on
    probe_interval: float = 0.5
    probe_timeout: float = 0.5
    phase_timeout: float = 120.0  # the longest any one phase may take
    keep: bool = False  # leave a lab the drill brought up running

    @property
    def flap_seconds(self) -> float:
        return self.flap_length if self.flap_length is not None else 0.4 * self.grace


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
        self.guest = lab.client("client1")
        self.run_id = uuid.uuid4().hex[:6]
        self.t0 = time.time()
        self.marks: list[Mark] = []
        self.phases: list[Phase] = []
        self.split_brain: list[float] = []
        self._samples_taken = 0
        self._lookups: list[Lookup] = []
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

    # -- the drill ---------------------------------------------------------------------

    async def run(self) -> DrillReport:
        self.t0 = self.live.started = time.time()
        for zone in self.lab.zones:  # an outage left by an earlier run would stop `up`
            self.lab.restore(zone.name)
        was_up = self.lab.status().up
        try:
            with self._phase("setup", "lab up"):
                self.say("bringing the lab up" if not was_up else "reusing the running lab")
                await asyncio.to_thread(functools.partial(self.lab.up, self.say, clients=1))
                await asyncio.to_thread(self._reset)
            return await self._run()
        except NfsFailoverError as exc:  # the lab, its client host or the pair failed us
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
        summary: dict[str, object] = dict.fromkeys(SUMMARY_KEYS)
        summary.update(passed=False, mode=self.options.mode.value, grace_s=self.options.grace,
                       flaps=self.options.flaps)  # fmt: skip
        return DrillReport(
            summary=summary,
            checks=[Check("the drill ran to its end", False, self.failure or "stopped")],
            phases=self.phases,
            marks=self.marks,
            started_at=self.t0,
            notes=[NO_KERNEL_NFS],
        )

    def _reset(self) -> None:
        """A clean pair: both zones reachable, site1 writable, no earlier drill's state."""
        for zone in self.lab.zones:
            self.lab.restore(zone.name)
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        # The client host starts afresh too: its maps and the state its agent last applied
        # belong to the earlier drill's store, which is gone.
        shutil.rmtree(self.guest.files_root, ignore_errors=True)
        self.workdir.mkdir(mode=0o700, parents=True)
        for zone in self.lab.zones:
            for old in zone.folder.glob(f"{PREFIX}*"):
                old.unlink()
            if ganesha.set_access(zone.conf, zone.folder, read_only=zone.role != "source"):
                ganesha.reload(zone.pidfile)

    def config(self) -> Config:
        """The lab's config with the drill's mode, timings, and a store of its own."""
        data: dict[str, Any] = yaml.safe_load(self.lab.config_path.read_text())
        o = self.options
        volume = data["volumes"][0]
        volume["mode"] = o.mode.value
        if o.mode is Mode.READ_ONLY:
            volume["mount"]["options"] = volume["mount"]["options"].replace("rw,", "ro,", 1)
        volume["replication"]["schedule"] = f"{o.schedule:g}s"
        volume["replication"]["state_dir"] = str(self.workdir / "replication")
        data["policy"].update({
            "probe_interval": f"{o.probe_interval * 1000:.0f}ms",
            "probe_timeout": f"{o.probe_timeout * 1000:.0f}ms",
            "failover_after": f"{o.grace * 1000:.0f}ms",
            "recover_after": "1s",
            "max_lag": f"{max(60.0, 3 * o.schedule):.0f}s",
            "failback": "manual",
        })  # fmt: skip
        data["autofs"]["root"] = str(self.workdir / "client")
        data["autofs"]["pidfile"] = str(self.workdir / "client" / "automount.pid")
        data["store"] = f"sqlite://{self.workdir / 'state.db'}"
        return parse_config(yaml.safe_dump(data), source=f"{self.lab.config_path} (drill)")

    async def _run(self) -> DrillReport:
        config = self.config()
        volume = config.volumes[0]
        store = SqliteStore(self.workdir / "state.db")
        provider = LocalProvider(volume)
        machine = GuestMachine(self.guest)
        client_view = client_config(config)
        settings = client_view.autofs
        agent = Agent(client_view, store, name=self.guest.name, machine=machine)
        controller = Controller(config, store, name="drill-controller",
                                providers={volume.name: provider}, agent=agent)  # fmt: skip
        with self._phase("baseline", "baseline transfer"):
            self.say(f"baseline transfer {volume.replicas[0].name} -> {volume.replicas[1].name}")
            await provider.transfer_now(timeout=self.options.phase_timeout)
            await agent.cycle()  # the maps exist before the client's daemon reads them
        daemon = GuestAutomount(self.guest)
        key = PurePosixPath(settings.mount_root) / (volume.mount.map_key or volume.name)
        await asyncio.to_thread(daemon.wait_mounted_root, key.parent)
        stop = asyncio.Event()
        pid = await asyncio.to_thread(lambda: daemon.pid)
        self.say(f"automount (pid {pid}) in {self.guest.name} mounts {key}")
        loop_task = asyncio.create_task(controller.run(stop))
        sampler = asyncio.create_task(self._sample(machine.files_path(settings.map_file),
                                                   volume, stop))  # fmt: skip
        try:
            async with AutofsClient(daemon, key) as client:
                self._lookups = client.lookups
                workload = await self._workload(client, volume, provider)
                await self._cycle(volume, controller, workload, client)
        finally:
            stop.set()
            await asyncio.gather(loop_task, sampler, return_exceptions=True)
            await controller.close()
        return await self._report(volume, store, provider, workload)

    async def _workload(
        self, client: AutofsClient, volume: Volume, provider: LocalProvider
    ) -> Workload:
        prefix = f"{PREFIX}{self.run_id}-"
        if self.options.mode is Mode.READ_WRITE:
            return Workload(client.resolve, prefix=prefix, interrupt=client.moved)
        # Read-only: write the files to read first, on the source, and replicate them.
        source = volume.replicas[0].export

        async def at_source() -> Any:
            return source

        seed = Workload(at_source, prefix=prefix)
        for _ in range(SEED_FILES):
            if await seed.step() is None:
                raise DrillError(f"could not write the files to read on {source}")
        await seed.close()
        await provider.transfer_now(timeout=self.options.phase_timeout)
        known = {ack.path: ack.sha256 for ack in seed.acks}
        reader = Workload(client.resolve, prefix=prefix, read_only=True, known=known,
                          interrupt=client.moved)  # fmt: skip
        reader.acks.extend(seed.acks)  # still owed on the final source
        return reader

    async def _cycle(
        self, volume: Volume, controller: Controller, workload: Workload, client: AutofsClient
    ) -> None:
        """The story, instant by instant, into ``self.at``; a DrillError stops it where it
        stands, and the report says where."""
        o = self.options
        source, destination = (str(r.export) for r in volume.replicas)
        name = volume.name
        at = self.at
        halt = asyncio.Event()
        task = asyncio.create_task(workload.run(halt))
        watch = asyncio.create_task(self._follow(workload, client, controller, name))
        try:
            with self._phase("steady", "client on zone 1"):
                first = await self._until_ok(workload, source, time.time() - 1, "zone 1")
                self.mark("client-start", "client on zone 1", first)
                self.say(f"client works on {source}")
                # The outage comes at a random moment of the probe cycle, as real ones do.
                await asyncio.sleep(o.steady + random.uniform(0, o.probe_interval))  # noqa: S311
            await self._flaps(controller, name)
            # The outage.
            self.live.phase = "zone 1 cut off"
            await asyncio.to_thread(self.lab.outage, "az1")
            at["outage"] = self.mark("outage", "zone 1 cut off")
            self.say(f"zone 1 cut off (ports 111, 635, 2049 dropped); grace {o.grace:g}s")
            at["first2"] = await self._until_ok(workload, destination, at["outage"], "zone 2")
            self.mark("first-op-zone2", f"first {_op(o.mode)} on zone 2", at["first2"])
            self.say(f"first {_op(o.mode)} on zone 2 after {at['first2'] - at['outage']:.2f}s")
            await self._until_done(controller, name, FAILOVER_KINDS, at["outage"])
            span = self._workflow_span(controller, name, FAILOVER_KINDS, at["outage"])
            self.phase("failover", "failover workflow", *span)
            await asyncio.sleep(o.steady)
            # Zone 1 returns; clients stay where they are until the failback.
            await asyncio.to_thread(self.lab.restore, "az1")
            at["restore"] = self.mark("restore", "zone 1 restored")
            self.phase("outage", "zone 1 cut off", at["outage"], at["restore"])
            self.say("zone 1 restored; the client stays on zone 2")
            with self._phase("restored", "zone 1 back, client stays on zone 2"):
                await asyncio.sleep(max(o.steady, 2 * o.probe_interval + o.probe_timeout))
            await self._failback(name, source, controller, workload)
        except (NfsFailoverError, TimeoutError) as exc:
            self.failure = str(exc) or f"timed out in phase {self.live.phase!r}"
            self.say(f"drill stopped: {self.failure}")
        finally:
            halt.set()
            watch.cancel()
            await asyncio.gather(task, watch, return_exceptions=True)
            await asyncio.to_thread(self.lab.restore, "az1")

    async def _failback(
        self, name: str, source: str, controller: Controller, workload: Workload
    ) -> None:
        o, at = self.options, self.at
        # The failback, as an operator asks for it (failback: manual).
        self.live.phase = "failback"
        at["failback"] = self.mark("failback-start", "failback requested")
        self.say("failback requested")
        await asyncio.wait_for(controller.request("failback", name), o.phase_timeout)
        at["failback_done"] = self.mark("failback-done", "failback done")
        self.phase("failback", "failback workflow", at["failback"], at["failback_done"])
        self.say(f"failback done in {at['failback_done'] - at['failback']:.2f}s")
        at["first1"] = await self._until_ok(workload, source, at["failback"], "zone 1 again")
        self.mark("first-op-zone1", f"client back on zone 1 ({_op(o.mode)})", at["first1"])
        self.say(
            f"client back on zone 1, {at['first1'] - at['failback']:.2f}s after the failback began"
        )
        with self._phase("back", "client back on zone 1"):
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
        started = self._workflows_since(controller, volume, FAILOVER_KINDS, start)
        self.false_failovers = len(started)
        self.say(f"flaps over: {len(started)} failovers started (expected 0)")
        if started:
            raise DrillError(
                f"a flap of {o.flap_seconds:g}s (grace {o.grace:g}s) started a failover"
            )

    # -- waiting -----------------------------------------------------------------------

    async def _until_ok(self, workload: Workload, export: str, after: float, what: str) -> float:
        """When the first successful operation on ``export`` after ``after`` ended."""
        deadline = time.monotonic() + self.options.phase_timeout
        while time.monotonic() < deadline:
            for op in workload.ops:
                if op.ok and op.export == export and op.at > after:
                    return op.at
            await asyncio.sleep(0.02)
        raise DrillError(
            f"the client did no successful {_op(self.options.mode)} on {what} ({export}) "
            f"within {self.options.phase_timeout:g}s"
        )

    async def _until_done(
        self, controller: Controller, volume: str, kinds: tuple[str, ...], after: float
    ) -> float:
        deadline = time.monotonic() + self.options.phase_timeout
        while time.monotonic() < deadline:
            last = controller.store.last_workflow(volume)
            if last and last.kind in kinds and last.status == "done" and last.updated > after:
                return last.updated
            await asyncio.sleep(0.05)
        raise DrillError(f"no failover workflow finished within {self.options.phase_timeout:g}s")

    def _workflow_events(
        self, controller: Controller, volume: str, kinds: tuple[str, ...], after: float
    ) -> list[Event]:
        return [e for e in controller.store.events(volume, after=0, limit=100_000)
                if e.kind in kinds and e.workflow is not None and e.at >= after]  # fmt: skip

    def _workflows_since(
        self, controller: Controller, volume: str, kinds: tuple[str, ...], after: float
    ) -> set[int]:
        events = self._workflow_events(controller, volume, kinds, after)
        return {e.workflow for e in events if e.workflow is not None}

    def _workflow_span(
        self, controller: Controller, volume: str, kinds: tuple[str, ...], after: float
    ) -> tuple[float, float]:
        events = self._workflow_events(controller, volume, kinds, after)
        return (events[0].at, events[-1].at) if events else (after, after)

    async def _follow(
        self, workload: Workload, client: AutofsClient, controller: Controller, volume: str
    ) -> None:
        """Keep the live view current, and say what the controller decides."""
        said = ""
        while True:
            current = client.current
            self.live.replica = str(current) if current else None
            self.live.ok = sum(1 for op in workload.ops if op.ok)
            self.live.failed = len(workload.failures)
            decision = controller.decision(volume)
            if decision is not None:
                self.live.decision = str(decision)
                # Said once per kind of decision, not once per second of a countdown.
                gist = re.sub(r"[\d.:]+", "#", str(decision))
                if gist != said:
                    said = gist
                    self.say(f"controller: {decision}")
            await asyncio.sleep(0.1)

    async def _sample(self, map_file: Path, volume: Volume, stop: asyncio.Event) -> None:
        """Every 100 ms: the replicas the client's map offers, and whether each one's
        server takes writes. Two writable replicas offered at once is split brain."""
        zones = {z.replica: z for z in self.lab.zones}
        while not stop.is_set():
            text = map_file.read_text() if map_file.exists() else ""
            writable = [
                r.name for r in volume.replicas
                if _offers(text, r.export.host, r.export.path)
                and ganesha.export_access(zones[r.name].conf, zones[r.name].folder) == "rw"
            ]  # fmt: skip
            self._samples_taken += 1
            if len(writable) > 1:
                self.split_brain.append(time.time() - self.t0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)

    # -- verification and figures ------------------------------------------------------

    async def _report(
        self, volume: Volume, store: SqliteStore, provider: LocalProvider, workload: Workload
    ) -> DrillReport:
        o = self.options
        rw = o.mode is Mode.READ_WRITE
        self.live.phase = "verifying"
        source, destination = (str(r.export) for r in volume.replicas)
        source_zone = self.lab.zone(volume.replicas[0].name)
        final = {ack.path: data for ack in workload.acks
                 if (data := _read(source_zone.folder / ack.path)) is not None}  # fmt: skip
        preserved, listed = _preserved(store, volume.name)
        verification = workload.verify(final, preserved)
        status = await provider.status(timeout=10.0)
        await provider.close()
        at = self.at
        events = self._events(store, volume.name)
        detected = self._mark_steps(events)
        outage, failback = at.get("outage"), at.get("failback")
        ok_ops = [op for op in workload.ops if op.ok]
        last_before = _last(op.at for op in ok_ops if outage is not None and op.at <= outage)
        last_on_dest = _last(op.at for op in ok_ops if op.export == destination
                             and op.at < at.get("first1", float("inf")))  # fmt: skip
        stayed = [op for op in ok_ops
                  if at.get("restore", float("inf")) < op.at < at.get("failback", 0.0)]  # fmt: skip
        rto = _span(outage, at.get("first2"))
        summary: dict[str, object] = {
            "mode": o.mode.value,
            "grace_s": o.grace,
            "detection_s": _span(outage, detected),
            "rto_s": rto,
            "rto_overhead_s": round(rto - o.grace, 3) if rto is not None else None,
            "break_s": _step_seconds(events, "break", "failover", outage) if rw else None,
            "write_unavailable_s": _span(last_before, at.get("first2")) if rw else None,
            "failback_s": _span(failback, at.get("failback_done")),
            "failback_unavailable_s": _span(last_on_dest, at.get("first1")),
            "writes_acknowledged": verification.acknowledged,
            "writes_lost": len(verification.lost),
            "writes_preserved": len(verification.preserved),
            "flaps": o.flaps,
            "false_failovers": self.false_failovers,
            "split_brain_instants": len(self.split_brain),
            "final_mirror_state": status.mirror_state.value,
            "report_html": None,
        }
        back_after = _span(failback, at.get("first1"))
        checks = [
            Check("the drill ran to its end", self.failure is None,
                  self.failure or "outage, failover, restore, failback, client back"),
            Check("no acknowledged write lost", verification.passed,
                  f"{verification.acknowledged} acknowledged: {verification.present} on the final "
                  f"source {source}, {len(verification.preserved)} preserved ({listed}), "
                  f"{len(verification.lost)} lost"
                  + (f": {', '.join(verification.lost[:5])}" if verification.lost else "")),
            Check("never two writable replicas offered", not self.split_brain,
                  f"{self._samples_taken} samples of the client map and both exports' access, "
                  f"every 100 ms: {len(self.split_brain)} offered two writable replicas"),
            Check("replication mirrored in the original direction",
                  status.mirror_state is MirrorState.MIRRORED
                  and status.source == volume.replicas[0].name,
                  f"{status.mirror_state.value}, {status.source} -> {status.destination}"),
            Check("no failover on a flap", not self.false_failovers,
                  f"{o.flaps} outages of {o.flap_seconds:g}s (grace {o.grace:g}s): "
                  f"{self.false_failovers} failovers" if o.flaps
                  else "no flaps asked for (--flaps N)"),
            Check("the client stayed on zone 2 until the failback",
                  "restore" in at and not [op for op in stayed if op.export == source],
                  f"{len(stayed)} operations between the restore and the failback, "
                  f"{sum(op.export == source for op in stayed)} on zone 1"),
            Check("the client is back on zone 1", back_after is not None,
                  f"first {_op(o.mode)} on {source} {back_after:.2f}s after the failback began"
                  if back_after is not None else "not seen"),
        ]  # fmt: skip
        summary["passed"] = all(c.passed for c in checks)
        names = {str(r.export): r.name for r in volume.replicas}
        samples = [Sample(round(op.at - self.t0, 3), names.get(op.export, op.export), op.kind,
                          op.ok) for op in workload.ops]  # fmt: skip
        lookups = [f"{x.seconds:.2f}s" for x in self._lookups]
        notes = [
            NO_KERNEL_NFS,
            f"Client lookups in automount: {len(lookups)} ({', '.join(lookups[:8])}).",
            f"Policy: probe every {o.probe_interval:g}s with a {o.probe_timeout:g}s deadline, "
            f"failover after {o.grace:g}s down, replication every {o.schedule:g}s.",
            "Zone outage: nftables in the zone's namespace drops TCP and UDP to ports 111, "
            "635 and 2049, like the seed's NSG rule.",
            f"Preserved files: {listed}.",
        ]
        return DrillReport(
            summary=summary, checks=checks, phases=sorted(self.phases, key=lambda p: p.start),
            marks=sorted(self.marks, key=lambda m: m.at), samples=samples, started_at=self.t0,
            notes=notes, lab={
                "state folder": str(self.lab.state_dir), "volume": volume.name,
                **{f"{r.name} ({z.name})": str(r.export)
                   for r, z in zip(volume.replicas, self.lab.zones, strict=True)},
                "workload": f"{'writes' if rw else 'reads'} of 4 KiB files"
                + (", FILE_SYNC" if rw else ""),
            },
        )  # fmt: skip

    def _mark_steps(self, events: list[Event]) -> float | None:
        """The workflows' own instants, from the journal; returns when the failover began."""
        outage, failback = self.at.get("outage"), self.at.get("failback")
        detected = None
        if outage is not None:
            detected = _first(e.at for e in events if e.kind in FAILOVER_KINDS and e.at >= outage)
            if detected is not None:
                self.mark("detected", "outage confirmed: failover starts", detected)
            for step, label in (("break", "replication broken"),
                                ("fence-source", "source fenced"),
                                ("steer-to-destination", "clients steered to zone 2")):  # fmt: skip
                end = _step_end(events, step, FAILOVER_KINDS, outage)
                if end is not None:
                    self.mark(step, label, end)
        if failback is not None:
            for step, label in (("reverse-resync", "reverse resync done"),
                                ("quiesce", "zone 2 read-only"),
                                ("steer-back", "clients steered back"),
                                ("resync-original", "original direction resynced")):  # fmt: skip
                end = _step_end(events, step, FAILBACK_KINDS, failback)
                if end is not None:
                    self.mark(step, label, end)
        return detected

    def _events(self, store: SqliteStore, volume: str) -> list[Event]:
        return list(store.events(volume, after=0, limit=100_000))


def _op(mode: Mode) -> str:
    return "write" if mode is Mode.READ_WRITE else "read"


def _span(start: float | None, end: float | None) -> float | None:
    return round(end - start, 3) if start is not None and end is not None else None


def _first(values: Iterable[float]) -> float | None:
    return next(iter(values), None)


def _last(values: Iterable[float]) -> float | None:
    found = list(values)
    return max(found) if found else None


def _offers(map_text: str, host: str, path: str) -> bool:
    pattern = rf"(?:^|[\s,]){re.escape(host)}(?:\(\d+\))?:{re.escape(path)}(?:\s|$)"
    return re.search(pattern, map_text, re.MULTILINE) is not None


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _preserved(store: SqliteStore, volume: str) -> tuple[dict[str, bytes], str]:
    """The files the last failback preserved, by path, and where they are."""
    last = store.last_workflow(volume)
    found: dict[str, bytes] = {}
    folders = []
    for key, value in (last.data if last else {}).items():
        if not key.startswith("preserved_") or not isinstance(value, dict):
            continue
        folder = Path(str(value.get("folder")))
        files = [str(f) for f in value.get("files") or []]
        if files:
            folders.append(f"{len(files)} in {folder}")
        for name in files:
            data = _read(folder / name)
            if data is not None:
                found[name] = data
    return found, "; ".join(folders) or "none"


def _step_seconds(events: list[Event], step: str, kind: str, after: float | None) -> float | None:
    if after is None:
        return None
    before = next((e.at for e in events if e.kind == kind and e.step == step
                   and e.phase == "before" and e.at >= after), None)  # fmt: skip
    done = next((e.at for e in events if e.kind == kind and e.step == step
                 and e.phase == "after" and e.at >= after), None)  # fmt: skip
    return _span(before, done)


def _step_end(events: list[Event], step: str, kinds: tuple[str, ...], after: float) -> float | None:
    return next((e.at for e in events if e.kind in kinds and e.step == step
                 and e.phase == "after" and e.at >= after), None)  # fmt: skip
