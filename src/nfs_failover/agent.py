"""The agent: on each NFS client, apply the desired state and report what it sees.

Each cycle it renders the autofs maps from the desired state, heals mounts that point
at a fenced or dead replica, and probes every replica of its volumes as one vantage
point, writing the results to the store. While it runs it follows the store's watch of
the desired state: a change is applied the moment it arrives, not at the next cycle, and
the cycles apply the newest state the watch gave instead of reading the store again (a
single cycle, ``--once``, reads it). A store that does not answer leaves the maps
exactly as they are (never back to a default that would un-fence a replica) until it
answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nfs_failover import files
from nfs_failover.config import Config
from nfs_failover.desired import VolumeDesired
from nfs_failover.errors import NfsFailoverError
from nfs_failover.probe import Prober, ProbeResult
from nfs_failover.steering import autofs_files, healing, verdicts
from nfs_failover.steering.autofs_files import Applied
from nfs_failover.steering.children import RUNNER
from nfs_failover.steering.healing import HealAction, HealOutcome, HealPolicy
from nfs_failover.steering.machine import Machine
from nfs_failover.steering.mountinfo import MOUNTINFO
from nfs_failover.steering.this_host import ThisHost
from nfs_failover.store import Report, Store, StoreError, watch_desired_async

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cycle:
    """What one agent cycle did, for logs and tests."""

    desired: dict[str, VolumeDesired] | None
    applied: Applied | None
    probes: tuple[ProbeResult, ...]
    heals: tuple[HealAction, ...] = ()
    problems: tuple[str, ...] = field(default_factory=tuple)


class Agent:
    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        name: str | None = None,
        store_timeout: float = 5.0,
        mountinfo: Path = MOUNTINFO,
        heal_policy: HealPolicy | None = None,
        machine: Machine | None = None,
        on_action: Callable[[str, str, float], None] | None = None,
    ) -> None:
        self.config = config
        # Told of each thing done to the client ("steered", a heal's outcome), its detail
        # and when it began: the drill keeps a per-client timeline from it.
        self._on_action = on_action or (lambda _kind, _detail, _at: None)
        self.store = store
        self.name = name or socket.gethostname()
        self.store_timeout = store_timeout
        self.machine: Machine = machine or ThisHost(mountinfo)
        self._steering = asyncio.Lock()
        self._healing = asyncio.Lock()
        self._shown: dict[str, VolumeDesired] | None = None  # what the maps say, once written
        self.heal_policy = heal_policy or HealPolicy()
        self.timeout = max(p.probe_timeout for p in map(config.effective_policy, config.volumes))
        self._prober = Prober(timeout=self.timeout.total_seconds())
        self._up: frozenset[str] = frozenset()  # replicas seen up at the last probe
        self._watched: dict[str, VolumeDesired] | None = None  # the watch's newest, in run()
        self._store_down = False  # said once when the store stops answering, once when back

    async def close(self) -> None:
        await self._prober.close()

    async def cycle(self) -> Cycle:
        problems: list[str] = []
        desired, applied = await self._steer(problems, self._watched)
        heals = await self._heal(problems)
        probes = await self._probe_and_report(problems)
        return Cycle(desired, applied, probes, heals, tuple(problems))

    async def steer(self) -> Cycle:
        """The maps from the desired state and, when they changed, the mounts they no
        longer allow: what a single-host controller runs the moment a workflow changes the
        desired state. Waiting for the next cycle would leave the applications stuck on a
        hung mount of the fenced source for up to a probe deadline more; the forced
        unmount frees them at once. No probes: the cycle does those."""
        problems: list[str] = []
        desired, applied = await self._steer(problems, None)
        heals: tuple[HealAction, ...] = ()
        if applied is not None and applied.changed:
            heals = await self._heal(problems)
        return Cycle(desired, applied, (), heals, tuple(problems))

    async def _steer(
        self, problems: list[str], watched: dict[str, VolumeDesired] | None
    ) -> tuple[dict[str, VolumeDesired] | None, Applied | None]:
        """The maps from ``watched`` (a snapshot of the watch), or from the store when
        None. One steering at a time: a cycle, a watched change and a steer() woken by a
        workflow must not both write the maps and both reload automount for one change."""
        async with self._steering:
            return await self._steer_once(problems, watched)

    async def _steer_once(
        self, problems: list[str], watched: dict[str, VolumeDesired] | None
    ) -> tuple[dict[str, VolumeDesired] | None, Applied | None]:
        desired = await self._read_desired(problems, watched)
        if desired is None:
            return None, None
        try:
            # In a worker thread: a reload may take seconds (systemctl, a remote client).
            applied = await asyncio.to_thread(
                autofs_files.apply, self.config, desired, machine=self.machine
            )
        except NfsFailoverError as exc:
            problems.append(f"maps: {exc}")
            log.error("maps not applied: %s", exc)
            return desired, None
        if applied.changed:
            log.info(
                "maps rewritten (%s): %s", applied.reload, ", ".join(map(str, applied.changed))
            )
            self._on_action("steered", f"maps rewritten, {applied.reload}", time.time())
        await asyncio.to_thread(self._remember_applied, desired)
        self._shown = desired
        return desired, applied

    async def _heal(self, problems: list[str]) -> tuple[HealAction, ...]:
        """Check the managed mounts (each in an abandoned-on-deadline child) and heal the
        ones that point at a fenced, hung or stale replica, judged by the state the maps
        show now (not by one read before a steer() moved them: that would unmount the new
        replica's fresh mount); one survey at a time, so that a steer() and a cycle never
        unmount the same mount twice. Nothing while no map was written yet."""
        async with self._healing:
            if self._shown is None:
                return ()
            return await self._heal_once(self._shown, problems)

    async def _heal_once(
        self, desired: dict[str, VolumeDesired], problems: list[str]
    ) -> tuple[HealAction, ...]:
        timeout = self.timeout.total_seconds()
        try:
            states = await asyncio.to_thread(
                verdicts.survey,
                self.config,
                desired,
                timeout=timeout,
                machine=self.machine,
                up=self._up,
            )
            actions = []
            for state in states:
                began = time.time()  # the unmount comes first; the report of holders after
                action = await asyncio.to_thread(
                    healing.heal, state, policy=self.heal_policy, machine=self.machine
                )
                if action.outcome is not HealOutcome.NOTHING:
                    log.warning("%s: %s: %s", state.key, action.outcome, action.reason)
                    self._on_action(str(action.outcome), action.reason, began)
                actions.append(action)
            RUNNER.reap()
        except NfsFailoverError as exc:
            problems.append(f"mounts: {exc}")
            return ()
        return tuple(actions)

    async def run(self, stop: asyncio.Event) -> None:
        """Cycle every probe interval until ``stop`` is set, following the desired
        state's watch meanwhile."""
        follower = asyncio.create_task(self._follow(stop))
        try:
            while not stop.is_set():
                started = time.monotonic()
                await self.cycle()
                wait = max(self._interval() - (time.monotonic() - started), 0.0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
            self._watched = None

    async def _follow(self, stop: asyncio.Event) -> None:
        """Apply each snapshot of the watch as it arrives, and heal the mounts the maps no
        longer allow, as steer() does. A watch that ended on its own (a bug, logged
        where it happened) is opened again after a probe interval."""
        while not stop.is_set():
            async for snapshot in watch_desired_async(self.store, stop):
                self._watched = snapshot
                problems: list[str] = []
                _, applied = await self._steer(problems, snapshot)
                if applied is not None and applied.changed:
                    await self._heal(problems)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval())

    def _interval(self) -> float:
        policies = [self.config.effective_policy(v) for v in self.config.volumes]
        return min(p.probe_interval for p in policies).total_seconds()

    async def _read_desired(
        self, problems: list[str], watched: dict[str, VolumeDesired] | None = None
    ) -> dict[str, VolumeDesired] | None:
        if watched is not None:
            stored = dict(watched)
        else:
            try:
                async with asyncio.timeout(self.store_timeout):
                    stored = await asyncio.to_thread(self.store.all_desired)
            except (StoreError, TimeoutError) as exc:
                problems.append(f"store: {self._why(exc)}; maps left as they are")
                self._store_failed(exc)
                return None
            self._store_answered()
        applied = self._applied()
        for volume in self.config.volumes:
            kept = applied.get(volume.name)
            if volume.name in stored or kept is None or not kept.fenced:
                continue
            # No record, but this client last applied a fenced state: a store that lost
            # its records must never un-fence a replica. Only a record moves it.
            stored[volume.name] = kept
            text = (
                f"store: no record of volume {volume.name}; keeping the state last applied"
                f" here ({', '.join(kept.fenced)} fenced, {kept.active} active)"
            )
            problems.append(text)
            log.warning("%s", text)
        return autofs_files.desired_for(self.config, stored)

    def _why(self, exc: Exception) -> str:
        """A store error as words; a timeout of our own has none of its own."""
        return str(exc) or f"no answer within {self.store_timeout:g}s"

    def _store_failed(self, exc: Exception) -> None:
        if not self._store_down:
            self._store_down = True
            log.warning("store unreachable (%s); maps left as they are", self._why(exc))

    def _store_answered(self) -> None:
        if self._store_down:
            self._store_down = False
            log.warning("store answers again")

    @property
    def applied_path(self) -> Path:
        settings = self.config.autofs
        return self.machine.files_path(settings.under_root(settings.applied_state))

    def _applied(self) -> dict[str, VolumeDesired]:
        try:
            data = json.loads(self.applied_path.read_text())
            return {
                name: VolumeDesired(
                    **{**d, "offered": tuple(d["offered"]), "fenced": tuple(d["fenced"])}
                )
                for name, d in data.items()
            }
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.error("%s: unreadable, ignored (%s)", self.applied_path, exc)
            return {}

    def _remember_applied(self, desired: dict[str, VolumeDesired]) -> None:
        text = json.dumps({name: asdict(d) for name, d in desired.items()}, indent=2) + "\n"
        try:
            files.write_atomically(self.applied_path, text, mode=0o600)
        except OSError as exc:
            log.error("%s: cannot write (%s)", self.applied_path, exc.strerror)

    async def _probe_and_report(self, problems: list[str]) -> tuple[ProbeResult, ...]:
        targets = [(v.name, r.name, r.export) for v in self.config.volumes for r in v.replicas]
        results = await asyncio.gather(*(self._prober.probe(export) for *_, export in targets))
        now = time.time()
        reports = [
            Report(self.name, volume, replica, result.up, result.summary(), result.latency_s, now)
            for (volume, replica, _), result in zip(targets, results, strict=True)
        ]
        try:
            async with asyncio.timeout(self.store_timeout):
                for report in reports:
                    await asyncio.to_thread(self.store.put_report, report)
        except (StoreError, TimeoutError) as exc:
            problems.append(f"store: reports not written ({self._why(exc)})")
            self._store_failed(exc)
        else:
            self._store_answered()
        self._up = frozenset(
            replica for (_, replica, _), result in zip(targets, results, strict=True) if result.up
        )
        return tuple(results)
