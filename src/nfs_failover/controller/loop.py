"""The controller's loop: observe, decide, act, once per probe interval.

Each cycle it probes every replica as one vantage point and reads the agents' reports,
turns them into endpoint health, asks each volume's provider for its replication status,
decides with ``decide``, and starts the workflow the decision names. Volumes act in
parallel: a zone outage hits all of them at once. A workflow left running by a killed
controller is resumed first. Only the holder of the leader lease acts (``lease``: renewed
on its own schedule, its workflows cancelled the moment it is lost); a standby controller
on the same store only watches. A store that does not answer is said once, decides
nothing, and leaves ``status`` answering with what the controller last read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import time
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from nfs_failover.agent import Agent
from nfs_failover.config import Config, Group, Mode, Volume
from nfs_failover.controller import fence, groups, workflows
from nfs_failover.controller.decide import (
    Action,
    Decision,
    GroupObserved,
    Observed,
    VolumeState,
    decide,
    decide_group,
)
from nfs_failover.controller.lease import LeaseKeeper
from nfs_failover.controller.snapshot import (
    AbortResult,
    ActionResult,
    JournalEntry,
    LatencySample,
    PauseResult,
    PreservedCopy,
    StorageFenceStatus,
    VolumeMetrics,
    VolumeStatus,
    WorkflowResult,
)
from nfs_failover.desired import VolumeDesired
from nfs_failover.errors import NfsFailoverError
from nfs_failover.health import EndpointHealth, HealthSettings, HealthTracker
from nfs_failover.probe import Prober
from nfs_failover.replication import MirrorState, Provider, ReplicationStatus, open_provider
from nfs_failover.store import Event, Report, Store, StoreError, UnreadableRecord, Workflow

log = logging.getLogger(__name__)
LEASE = "controller"
ACTION_WORKFLOW = {
    Action.FAILOVER: "failover",
    Action.FAILOVER_READ_ONLY: "failover-read-only",
    Action.FAILBACK: "failback",
    Action.FAILBACK_READ_ONLY: "failback-read-only",
}
MANUAL = {"failover": "failover", "failback": "failback", "switchover": "switchover"}
MANUAL_READ_ONLY = {"failover": "failover-read-only", "failback": "failback-read-only"}
DONE = {"failover": "failed over", "failback": "failed back", "switchover": "switched over"}
# The seconds a reason counts ("down for 4.2s of a 60s grace") move every cycle: a decision
# is journaled and logged when its action or the rest of its reason changed, not once a
# cycle per volume for as long as a replica is suspect.
_COUNTED = re.compile(r"\b\d+(?:\.\d+)?s\b")


def _gist(decision: Decision) -> tuple[Action, str]:
    return decision.action, _COUNTED.sub("#s", decision.reason)


def volume_state(volume: Volume, desired: VolumeDesired | None, running: str | None) -> VolumeState:
    """Where a volume is, from its desired state (the one source of truth)."""
    if running in ("failover", "switchover", "failover-read-only"):
        return VolumeState.FAILING_OVER
    if running in ("failback", "failback-read-only"):
        return VolumeState.FAILING_BACK
    if desired is None or desired.active == volume.replicas[0].name:
        return VolumeState.NORMAL
    return VolumeState.FAILED_OVER if desired.fenced else VolumeState.FAILED_OVER_RO


def _preserved(data: Mapping[str, object]) -> Iterator[PreservedCopy]:
    """What a failback saved before overwriting it: folder, files, and files deleted."""
    for key, value in data.items():
        if not key.startswith("preserved_") or not isinstance(value, dict):
            continue
        try:
            yield PreservedCopy.model_validate(value)
        except ValidationError as exc:  # a row the journal kept is still shown, less this
            log.warning("%s of a workflow cannot be read: %s", key, exc)


@dataclass(frozen=True)
class Stored:
    """What a cycle reads of the store for all its volumes at once: a few calls, however
    many volumes. A volume whose desired state cannot be read has its error instead."""

    desired: Mapping[str, VolumeDesired]
    unreadable: Mapping[str, StoreError]
    running: Mapping[str, Workflow]
    paused: frozenset[str]

    @classmethod
    def read(cls, store: Store, volumes: Sequence[str], groups: Sequence[str] = ()) -> Stored:
        """Blocking: call it in a worker thread. A volume missing from ``all_desired`` is
        read alone, so that an unreadable record is its error, never "no record". A group
        has no desired state of its own: only its pause is read."""
        desired = dict(store.all_desired())
        unreadable = {}
        for volume in volumes:
            if volume in desired:
                continue
            try:
                found = store.get_desired(volume)
            except UnreadableRecord as exc:  # no answer at all is the cycle's to handle
                unreadable[volume] = exc
                continue
            if found is not None:
                desired[volume] = found
        names = [*volumes, *groups]
        last = store.last_events(["*", *names], ["pause", "resume"])
        paused = frozenset(v for v in names if _paused(last.get("*"), last.get(v)))
        return cls(desired, unreadable, store.running_workflows(), paused)


def _paused(everywhere: Event | None, own: Event | None) -> bool:
    """Pause is journaled, so it survives restarts: the last pause/resume event wins."""
    newest = max((e for e in (everywhere, own) if e is not None), key=lambda e: e.id, default=None)
    return newest is not None and newest.kind == "pause"


@dataclass(frozen=True)
class _Shown:
    """What the store last said of one volume: ``status`` shows it while it does not answer."""

    desired: VolumeDesired | None
    running: Workflow | None
    last: Workflow | None
    paused: bool
    storage_fence: fence.StorageFence | None = None


def _fences_maps(desired: VolumeDesired | None) -> bool:
    return desired is not None and bool(desired.fenced)


def _storage_fence(record: fence.StorageFence | None) -> StorageFenceStatus | None:
    if record is None or record.state is fence.FenceState.UNFENCED:
        return None
    return StorageFenceStatus(
        replica=record.replica,
        state=record.state.value,
        since=record.since,
        replaced=record.saved,
        reason=record.reason,
        error=record.error,
    )


class Controller:
    """One controller (and, in single-host mode, its agents) over one store."""

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        name: str | None = None,
        providers: Mapping[str, Provider] | None = None,
        agents: Sequence[Agent] = (),
        step_timeout: float = 300.0,
    ) -> None:
        self.config = config
        self.store = store
        # The process id too: two controllers on one host must not share the lease.
        self.name = name or f"controller@{socket.gethostname()}:{os.getpid()}"
        self.providers = dict(providers or {v.name: open_provider(v) for v in config.volumes})
        # Single-host mode: the agent of this host, or (the drill) one per client host.
        self.agents = tuple(agents)
        self.step_timeout = step_timeout
        self._names = [v.name for v in config.volumes]
        self._groups = [g.name for g in config.groups]
        policies = {v.name: config.effective_policy(v) for v in config.volumes}
        self.tracker = HealthTracker(lambda name: HealthSettings.from_policy(policies[name]))
        self.interval = min(p.probe_interval for p in policies.values()).total_seconds()
        self.timeout = max(p.probe_timeout for p in policies.values()).total_seconds()
        self._prober = Prober(timeout=self.timeout)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._decisions: dict[str, Decision] = {}
        self._health: dict[tuple[str, str], EndpointHealth] = {}
        self._replication: dict[str, ReplicationStatus | None] = {}
        self._latencies: dict[tuple[str, str], float] = {}
        self._last_cycle = 0.0
        self._changed = asyncio.Event()
        self._steering: set[asyncio.Task[object]] = set()
        self._stored: dict[str, _Shown] = {}
        self._store_error: str | None = None  # set while the store does not answer
        # The lease outlives three cycles; this controller acts on it until a margin
        # before it ends (``lease``), and cancels its workflows then.
        self.keeper = LeaseKeeper(
            store,
            LEASE,
            self.name,
            max(3 * self.interval, 5.0),
            on_lost=self._lease_lost,
            on_store_error=self._store_failed,
        )
        self._keeping = False  # run() renews the lease
        self._kept_for = 0  # blocks that keep it renewed meanwhile (_lease_kept)
        self._kept_stop = asyncio.Event()
        self._kept_task: asyncio.Task[None] | None = None
        self._fences = fence.Retrier(store, guard=self.keeper.guard)

    @property
    def leader(self) -> bool:
        """Whether this controller holds the lease now (and may act)."""
        return self.keeper.leader and self.keeper.lease.valid()

    async def close(self) -> None:
        self.keeper.close()
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        await self._fences.close()
        await self._prober.close()
        for provider in self.providers.values():
            await provider.close()

    async def settle(self, timeout: float) -> None:
        """Wait (bounded) for the workflows in flight to end, the lease kept meanwhile."""
        pending = [t for t in self._tasks.values() if not t.done()]
        if pending:
            async with self._lease_kept():
                await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), timeout)

    @contextlib.asynccontextmanager
    async def _lease_kept(self) -> AsyncIterator[None]:
        """The lease renewed on its schedule for the block, when ``run`` does not already
        renew it (a controller driven cycle by cycle, or asked for one action): a workflow
        longer than the lease's validity would otherwise be cancelled half way."""
        if self._keeping:
            yield
            return
        self._kept_for += 1
        if self._kept_for == 1:
            self._kept_stop = asyncio.Event()
            self._kept_task = asyncio.create_task(self.keeper.keep(self._kept_stop, self.interval))
        try:
            yield
        finally:
            self._kept_for -= 1
            if self._kept_for == 0 and self._kept_task is not None:
                self._kept_stop.set()
                await asyncio.gather(self._kept_task, return_exceptions=True)
                self._kept_task = None

    # -- the loop --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Cycle until ``stop``; each provider's own schedule (``serve``) runs alongside, and
        so does the agent (single-host mode), on a loop of its own: a slow agent cycle (a
        hung mount's check, a remote client) never delays the controller's decisions."""
        self._changed = asyncio.Event()  # of this loop
        alongside = [
            asyncio.create_task(provider.serve(stop)) for provider in self.providers.values()
        ]
        agents = [asyncio.create_task(self._run_agent(agent, stop)) for agent in self.agents]
        # The lease on its own schedule: a slow cycle (a provider slow to answer) never
        # lets a healthy lease lapse.
        await self.keeper.renew()
        keeping = asyncio.create_task(self.keeper.keep(stop, self.interval))
        self._keeping = True
        try:
            while not stop.is_set():
                started = time.monotonic()
                await self._guarded_cycle()
                wait = max(self.interval - (time.monotonic() - started), 0.0)
                await self._sleep(stop, wait)
        finally:
            self._keeping = False
            for task in agents:  # an agent cycle is safe to cut short: its writes are atomic
                task.cancel()
                alongside.append(task)
            await asyncio.gather(*alongside, keeping, return_exceptions=True)
            await self.keeper.release()

    def _lease_lost(self, why: str) -> None:
        """Stop every workflow of this controller now, before the lease could be another's.
        Each stays running in the store, at the step it was at, for the next leader."""
        stopped = [task.get_name() for task in self._tasks.values() if not task.done()]
        for task in self._tasks.values():
            task.cancel()
        self._fences.cancel()
        if stopped:
            log.warning(
                "%s cancelled (%s); the next leader resumes it at its step",
                ", ".join(stopped),
                why,
            )

    def _store_failed(self, exc: StoreError) -> None:
        if self._store_error is None:
            log.warning("store unreachable: %s", exc)
            self._store_error = str(exc)

    def _store_answered(self) -> None:
        if self._store_error is not None:
            log.warning("store answers again")
            self._store_error = None

    def _wake(self) -> None:
        """A workflow changed the desired state: the agents (single-host mode) apply it
        now, and the next cycle comes at once."""
        self._changed.set()
        for agent in self.agents:
            steering = asyncio.create_task(agent.steer())
            self._steering.add(steering)
            steering.add_done_callback(self._steering.discard)

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        """Until the next cycle: ``seconds``, or less when a workflow changed the desired
        state (the agent applies it at once) or ``stop`` is set."""
        waiters = [asyncio.ensure_future(e.wait()) for e in (stop, self._changed)]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        self._changed.clear()

    async def _guarded_cycle(self) -> None:
        try:
            await self.cycle()
        except NfsFailoverError as exc:  # a family we know: say it, go on
            log.error("cycle failed: %s", exc)
        except Exception:  # a bug: log it as one, and keep the loop alive
            log.exception("cycle failed with an unexpected error")

    async def _run_agent(self, agent: Agent, stop: asyncio.Event) -> None:
        """An agent's own loop; an unexpected error is logged as the bug it is, and the
        agent goes on after a pause."""
        while not stop.is_set():
            try:
                await agent.run(stop)
            except Exception:
                log.exception("agent cycle failed with an unexpected error")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval)

    async def cycle(self) -> dict[str, Decision]:
        """One observe-decide-act pass. Called on its own (tests, no ``run``), it takes or
        renews the lease first; under ``run`` the lease keeps its own schedule."""
        now = time.time()
        if not self._keeping and not self._kept_for:
            await self.keeper.renew()
        # The store is called from a worker thread: a locked database waits there, never
        # on the event loop (the API, the agent and the probes go on meanwhile).
        try:
            decisions = await self._decide_all(now)
        except StoreError as exc:  # no answer: nothing is decided, and it is said once
            self._store_failed(exc)
            decisions = {v.name: self._unreachable(v.name) for v in self.config.volumes}
        else:
            self._store_answered()
        self._last_cycle = time.monotonic()
        return decisions

    async def _decide_all(self, now: float) -> dict[str, Decision]:
        """A decision for each volume alone and for each group (under the group's name)."""
        await self._observe(now)
        stored = await asyncio.to_thread(Stored.read, self.store, self._names, self._groups)
        decisions: dict[str, Decision] = {}
        for volume in self.config.volumes:
            if self.config.group_of(volume.name) is None:
                decisions[volume.name] = await self._act_alone(volume, now, stored)
        for group in self.config.groups:
            solo = self._solo_member(group, stored)
            if solo is not None:  # its own workflow, from before the group: it ends first
                decisions[solo.name] = await self._act_alone(solo, now, stored)
                kind = stored.running[solo.name].kind
                reason = f"no action: volume {solo.name} runs a {kind} of its own; the group waits"
                decision = self._standby_or(Decision(Action.NONE, reason))
            else:
                decision = self._standby_or(await self._decide_group(group, now, stored))
            await asyncio.to_thread(self._remember, group.name, decision, group.volumes)
            decisions[group.name] = decision
            if not self.leader or solo is not None:
                continue
            if decision.action is not Action.NONE:
                await self._start_group(group, decision)
                continue
            for name in group.volumes:
                self._poke_fence(name, stored)
        return decisions

    async def _act_alone(self, volume: Volume, now: float, stored: Stored) -> Decision:
        decision = self._standby_or(await self._decide(volume, now, stored))
        await asyncio.to_thread(self._remember, volume.name, decision)
        if self.leader and decision.action is not Action.NONE:
            await self._start(volume, decision)
        elif self.leader:
            self._poke_fence(volume.name, stored)
        return decision

    def _standby_or(self, decision: Decision) -> Decision:
        if self.leader:
            return decision
        holder = self.keeper.seen_holder or "another controller"
        return Decision(Action.NONE, f"standby: {holder} holds the lease")

    def _poke_fence(self, volume: str, stored: Stored) -> None:
        """A failed-over volume: its storage fence, if still pending, is tried again."""
        if _fences_maps(stored.desired.get(volume)):
            self._fences.poke(volume, self.providers[volume])

    def _solo_member(self, group: Group, stored: Stored) -> Volume | None:
        """A member running a workflow of its own (started before it joined the group)."""
        for name in group.volumes:
            running = stored.running.get(name)
            if running is not None and not groups.is_claim(running):
                return self.config.volume(name)
        return None

    def _unreachable(self, volume: str) -> Decision:
        """The decision while the store does not answer: nothing, said once (not journaled:
        the journal is in the store)."""
        decision = Decision(Action.NONE, f"no action: store unreachable ({self._store_error})")
        before = self._decisions.get(volume)
        self._decisions[volume] = decision
        if before is None or str(before) != str(decision):
            log.info("%s: %s", volume, decision)
        return decision

    async def plan(self) -> dict[str, Decision]:
        """What this controller would do now and why, changing nothing (no lease taken,
        no workflow started)."""
        now = time.time()
        await self._observe(now)
        stored = await asyncio.to_thread(Stored.read, self.store, self._names, self._groups)
        plans = {}
        for volume in self.config.volumes:
            if self.config.group_of(volume.name) is None:
                plans[volume.name] = await self._decide(volume, now, stored)
                self._decisions[volume.name] = plans[volume.name]
        for group in self.config.groups:
            plans[group.name] = await self._decide_group(group, now, stored)
            for name in (group.name, *group.volumes):
                self._decisions[name] = plans[group.name]
        return plans

    async def _observe(self, now: float) -> None:
        targets = [(v.name, r.name, r.export) for v in self.config.volumes for r in v.replicas]
        results = await asyncio.gather(*(self._prober.probe(e) for *_, e in targets))
        for (volume, replica, _), result in zip(targets, results, strict=True):
            self.tracker.observe(
                Report(
                    self.name, volume, replica, result.up, result.summary(), result.latency_s, now
                )
            )
            self._latencies[(volume, replica)] = result.latency_s
        for report in await asyncio.to_thread(self.store.reports):
            self.tracker.observe(report)
        # Judged when the answers are in: a probe that timed out says the replica did not
        # answer from the probe's start (the report's time) until now.
        for health in self.tracker.evaluate_all(time.time()):
            self._health[(health.volume, health.replica)] = health
            if health.changed:
                log.info("%s/%s: %s", health.volume, health.replica, health.reason)

    async def _observed(self, volume: Volume, now: float, stored: Stored) -> Observed | Decision:
        """What the controller knows of the volume now, or the decision when it cannot know."""
        running = stored.running.get(volume.name)
        if volume.name in stored.unreadable:  # this volume waits for a readable row
            return Decision(Action.NONE, f"no action: {stored.unreadable[volume.name]}")
        desired = stored.desired.get(volume.name)
        status, error = await self._replication_status(volume)
        source, destination = (self._health_of(volume.name, r.name, now) for r in volume.replicas)
        return Observed(
            volume=volume,
            policy=self.config.effective_policy(volume),
            state=volume_state(volume, desired, running.kind if running else None),
            source=source,
            destination=destination,
            replication=status,
            replication_error=error,
            paused=volume.name in stored.paused,
            running_workflow=(
                f"{running.kind} at step {running.step}"
                if running and not self._in_flight(volume.name)
                else None
            ),
        )

    def _in_flight(self, name: str) -> bool:
        return name in self._tasks and not self._tasks[name].done()

    async def _decide(self, volume: Volume, now: float, stored: Stored) -> Decision:
        seen = await self._observed(volume, now, stored)
        if isinstance(seen, Decision):
            return seen
        running = stored.running.get(volume.name)
        if self._in_flight(volume.name):
            return Decision(Action.NONE, f"{running.kind if running else 'workflow'} in progress")
        if running is not None and groups.is_claim(running):  # its group left the config
            held = running.data.get(groups.GROUP_WORKFLOW)
            return Decision(
                Action.NONE,
                f"no action: held by the {running.kind} of group {running.data.get('group')}"
                f" (workflow {held}), which the config no longer has; `abort {volume.name}`"
                " ends the hold",
            )
        return decide(seen)

    async def _decide_group(self, group: Group, now: float, stored: Stored) -> Decision:
        members = []
        for name in group.volumes:
            seen = await self._observed(self.config.volume(name), now, stored)
            if isinstance(seen, Decision):  # a member's record cannot be read: the group waits
                return seen
            members.append(seen)
        running = stored.running.get(group.name)
        if self._in_flight(group.name):
            kind = running.kind if running else "workflow"
            return Decision(Action.NONE, f"{kind} of group {group.name} in progress")
        where = None
        if running is not None:
            steps = [n for n, _ in groups.group_steps(running.kind, group)]
            at = steps[running.step] if running.step < len(steps) else "its end"
            where = f"{running.kind} of group {group.name} at step {running.step} ({at})"
        paused = group.name in stored.paused or any(m.paused for m in members)
        return decide_group(GroupObserved(group.name, tuple(members), paused, where))

    def _health_of(self, volume: str, replica: str, now: float) -> EndpointHealth:
        return self._health.get((volume, replica)) or self.tracker.evaluate(volume, replica, now)

    async def _replication_status(
        self, volume: Volume
    ) -> tuple[ReplicationStatus | None, str | None]:
        try:
            status = await self.providers[volume.name].status(timeout=self.timeout * 2)
        except NfsFailoverError as exc:
            self._replication[volume.name] = None
            return None, str(exc)
        self._replication[volume.name] = status
        return status, None

    def _remember(self, volume: str, decision: Decision, members: Sequence[str] = ()) -> None:
        """Journal the decision when it changed; a group's is each member's too (status)."""
        before = self._decisions.get(volume)
        for name in (volume, *members):
            self._decisions[name] = decision
        if before is None or _gist(before) != _gist(decision):
            log.info("%s: %s", volume, decision)
            self.store.append(
                Event(
                    volume, "decision", {"action": decision.action.value, "reason": decision.reason}
                )
            )

    async def _start(self, volume: Volume, decision: Decision, *, force: bool = False) -> None:
        running = await asyncio.to_thread(self.store.running_workflow, volume.name)
        kind = (
            running.kind
            if decision.action is Action.RESUME and running
            else (ACTION_WORKFLOW.get(decision.action))
        )
        if kind is None:
            return
        self._launch(
            volume, kind, resume=running if running and running.kind == kind else None, force=force
        )

    async def _start_group(self, group: Group, decision: Decision) -> None:
        running = await asyncio.to_thread(self.store.running_workflow, group.name)
        kind = (
            running.kind
            if decision.action is Action.RESUME and running
            else ACTION_WORKFLOW.get(decision.action)
        )
        if kind is None:
            return
        resume = running if running and running.kind == kind else None
        self._launch_group(group, kind, resume=resume)

    def _context(self, volume: Volume, *, force: bool = False) -> workflows.Context:
        return workflows.Context(
            self.config,
            volume,
            self.providers[volume.name],
            self.store,
            force=force,
            step_timeout=self.step_timeout,
            on_desired=self._wake,
            guard=self.keeper.guard,
        )

    def _launch(
        self, volume: Volume, kind: str, *, resume: Workflow | None = None, force: bool = False
    ) -> asyncio.Task[None]:
        ctx = self._context(volume, force=force)
        return self._supervise(volume.name, kind, workflows.run(ctx, kind, resume=resume))

    def _launch_group(
        self, group: Group, kind: str, *, resume: Workflow | None = None, force: bool = False
    ) -> asyncio.Task[None]:
        members = {n: self._context(self.config.volume(n), force=force) for n in group.volumes}
        ctx = groups.GroupContext(
            self.config, group, members, self.store, force=force, guard=self.keeper.guard
        )
        return self._supervise(group.name, kind, groups.run_group(ctx, kind, resume=resume))

    def _supervise(
        self, name: str, kind: str, running: Coroutine[object, object, Workflow]
    ) -> asyncio.Task[None]:
        """The workflow as a task of ``name`` (a volume or a group), its end logged."""

        async def go() -> None:
            try:
                await running
                log.info("%s: %s done", name, kind)
            except workflows.Refused as exc:
                log.warning("%s: %s refused: %s", name, kind, exc)
            except NfsFailoverError as exc:
                log.error("%s: %s stopped, to be resumed: %s", name, kind, exc)

        task = asyncio.create_task(go(), name=f"{kind}:{name}")
        self._tasks[name] = task
        return task

    # -- pause, and the operator's requests --------------------------------------------------

    def paused(self, volume: str) -> bool:
        """Whether ``volume`` is paused: itself, every volume, or its group."""
        group = self.config.group_of(volume)
        names = [volume] if group is None else [volume, group.name]
        last = self.store.last_events(["*", *names], ["pause", "resume"])
        return any(_paused(last.get("*"), last.get(name)) for name in names)

    async def request(
        self, action: str, volume: str | None, *, force: bool = False
    ) -> ActionResult:
        """Run a manual action, on the leader only: the lease is taken or renewed first,
        and a controller that cannot hold it refuses, naming the one that does."""
        refusal = await self.keeper.renew()
        if refusal is not None:
            raise NfsFailoverError(refusal)
        async with self._lease_kept():
            return await self._act(action, volume, force=force)

    async def _act(self, action: str, volume: str | None, *, force: bool) -> ActionResult:
        if action == "abort":
            return await self._abort(volume, force=force)
        if action in ("pause", "resume"):
            await asyncio.to_thread(
                self.store.append, Event(volume or "*", action, {"by": "operator"})
            )
            return PauseResult(action=action, volume=volume or "*", done=True)
        group = self._group_named(volume)
        if group is not None and volume is not None and action in MANUAL:
            return await self._act_group(action, group, volume, force=force)
        target = next((v for v in self.config.volumes if v.name == volume), None)
        read_only = target is not None and target.mode is Mode.READ_ONLY
        kind = (MANUAL_READ_ONLY if read_only else MANUAL).get(action)
        if read_only and kind is None and action in MANUAL:
            raise NfsFailoverError(f"volume {volume}: {action} needs a read-write volume")
        if kind is None or target is None:
            raise NfsFailoverError(f"unknown action {action!r} or volume {volume!r}")
        if await asyncio.to_thread(self.store.running_workflow, target.name) is not None:
            raise NfsFailoverError(f"volume {target.name}: a workflow is already running")
        await self._wait_for(self._launch(target, kind, force=force), f"{kind} {target.name}")
        last = await self._ended(target.name, f"{kind} {target.name}")
        return WorkflowResult(action=action, volume=target.name, workflow=last.id, status="done")

    def _group_named(self, name: str | None) -> Group | None:
        """The group called ``name``, or the group of the volume called so: a manual
        action on a member acts on its whole group."""
        if name is None:
            return None
        found = next((g for g in self.config.groups if g.name == name), None)
        return found or self.config.group_of(name)

    async def _act_group(
        self, action: str, group: Group, asked: str, *, force: bool
    ) -> WorkflowResult:
        members = [self.config.volume(name) for name in group.volumes]
        read_only = members[0].mode is Mode.READ_ONLY
        kind = (MANUAL_READ_ONLY if read_only else MANUAL).get(action)
        if kind is None:
            raise NfsFailoverError(f"group {group.name}: {action} needs read-write volumes")
        for name in (group.name, *group.volumes):
            if await asyncio.to_thread(self.store.running_workflow, name) is not None:
                what = "group" if name == group.name else "volume"
                raise NfsFailoverError(f"{what} {name}: a workflow is already running")
        note = None
        if asked != group.name:
            every = ", ".join(group.volumes)
            note = (
                f"volume {asked} is in group {group.name}: the whole group {DONE[action]} ({every})"
            )
            log.info("%s of volume %s acts on its group %s (%s)", action, asked, group.name, every)
        label = f"{kind} of group {group.name}"
        await self._wait_for(self._launch_group(group, kind, force=force), label)
        last = await self._ended(group.name, label)
        return WorkflowResult(
            action=action,
            volume=asked,
            workflow=last.id,
            status="done",
            group=group.name,
            members=group.volumes,
            note=note,
        )

    async def _wait_for(self, task: asyncio.Task[None], label: str) -> None:
        """Until the workflow's task ends; a lease lost meanwhile is this request's error."""
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not task.cancelled() or (current is not None and current.cancelling()):
                raise  # the request itself was cancelled: the workflow goes on
            raise NfsFailoverError(
                f"{label}: stopped, this controller lost its lease; the next"
                " leader resumes it at its step"
            ) from None

    async def _ended(self, name: str, label: str) -> Workflow:
        """The workflow of ``name`` that just ended, done; or its refusal, as the error."""
        last = await asyncio.to_thread(self.store.last_workflow, name)
        if last is None or last.status != "done":
            refusal = await asyncio.to_thread(self._last_refusal, name)
            reason = refusal or "stopped; it resumes on the next cycle"
            raise NfsFailoverError(f"{label}: {reason}")
        return last

    async def _abort(self, volume: str | None, *, force: bool) -> AbortResult:
        """End the running workflow where it stands (journaled): the way out of one that
        cannot finish. Refused past its point of no return (a break, a reverse resync)
        unless forced; the answer says what state the volume is left in."""
        group = self._group_named(volume)
        if group is not None and volume is not None:
            own = await asyncio.to_thread(self.store.running_workflow, volume)
            if volume == group.name or own is None or groups.is_claim(own):
                return await self._abort_group(group, volume, force=force)
        target = next((v for v in self.config.volumes if v.name == volume), None)
        if target is None:
            raise NfsFailoverError(f"unknown volume {volume!r}")
        running = await asyncio.to_thread(self.store.running_workflow, target.name)
        if running is None:
            raise NfsFailoverError(f"volume {target.name}: no workflow is running")
        steps = [name for name, _ in workflows.WORKFLOWS[running.kind]]
        at = steps[running.step] if running.step < len(steps) else "its end"
        past = workflows.past_no_return(running.kind, running.step)
        if groups.is_claim(running):
            past = None  # a group's hold, left by a group the config no longer has
        if past and not force:
            raise NfsFailoverError(
                f"volume {target.name}: {running.kind} is past {past} (at {at}); aborting it"
                " leaves the replication as that step left it: use --force to abort anyway"
            )
        await self._cancel(target.name)
        await asyncio.to_thread(self.store.finish_workflow, running.id, "aborted")
        desired = await asyncio.to_thread(self.store.get_desired, target.name)
        state = volume_state(target, desired, None)
        detail: dict[str, object] = {
            "by": "operator",
            "workflow": running.id,
            "kind": running.kind,
            "at": at,
            "forced": force,
            "state": state.value,
        }
        await asyncio.to_thread(self.store.append, Event(target.name, "abort", detail))
        log.warning(
            "%s: %s aborted at %s by the operator; the volume is %s",
            target.name,
            running.kind,
            at,
            state.value,
        )
        return AbortResult(
            action="abort",
            volume=target.name,
            workflow=running.id,
            kind=running.kind,
            at=at,
            state=state,
        )

    async def _cancel(self, name: str) -> None:
        task = self._tasks.get(name)
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, NfsFailoverError):
                await task

    async def _abort_group(self, group: Group, asked: str, *, force: bool) -> AbortResult:
        """``abort`` of a group, or of one of its members: the group's workflow ends, and
        every member's hold with it."""
        running = await asyncio.to_thread(self.store.running_workflow, group.name)
        if running is None:
            raise NfsFailoverError(f"group {group.name}: no workflow is running")
        steps = [name for name, _ in groups.group_steps(running.kind, group)]
        at = steps[running.step] if running.step < len(steps) else "its end"
        past = groups.past_no_return(running.kind, group, running.step)
        if past and not force:
            raise NfsFailoverError(
                f"group {group.name}: {running.kind} is past {past} (at {at}); aborting it"
                " leaves the replication as that step left it: use --force to abort anyway"
            )
        await self._cancel(group.name)
        await groups.finish_group(self.store, group, running.id, "aborted", running.data)
        states = {}
        for name in group.volumes:
            desired = await asyncio.to_thread(self.store.get_desired, name)
            states[name] = volume_state(self.config.volume(name), desired, None)
        detail: dict[str, object] = {
            "by": "operator",
            "workflow": running.id,
            "kind": running.kind,
            "at": at,
            "forced": force,
            "states": {name: state.value for name, state in states.items()},
        }
        await asyncio.to_thread(self.store.append, Event(group.name, "abort", detail))
        shown = ", ".join(f"{name} {state.value}" for name, state in states.items())
        log.warning(
            "group %s: %s aborted at %s by the operator; %s", group.name, running.kind, at, shown
        )
        first = group.volumes[0] if asked == group.name else asked
        return AbortResult(
            action="abort",
            volume=asked,
            workflow=running.id,
            kind=running.kind,
            at=at,
            state=states[first],
            group=group.name,
            states=states,
        )

    def _last_refusal(self, volume: str) -> str | None:
        kinds = list(workflows.WORKFLOWS)
        refused = self.store.last_event([volume], kinds, with_key="refused")
        return str(refused.detail["refused"]) if refused else None

    # -- what the API and the CLI show -------------------------------------------------------

    def decision(self, volume: str) -> Decision | None:
        """The latest decision for ``volume``, as the last cycle made it."""
        return self._decisions.get(volume)

    def status(self) -> list[VolumeStatus]:
        """Every volume, never raising: while the store does not answer (the cycle found
        it so, or a read here fails) the store's part is what it last said, and
        ``store_error`` says why. The store is not asked again in that time, so that a
        status costs no store deadline per volume."""
        error = self._store_error
        leader = self.name if self.leader else None
        if leader is None and error is None:
            try:
                leader = self.store.lease_holder(LEASE)
            except StoreError as exc:
                error = str(exc)
        shown = []
        for volume in self.config.volumes:
            if error is None:
                try:
                    self._stored[volume.name] = self._read_stored(volume.name)
                except StoreError as exc:
                    error = str(exc)
            shown.append(self._volume_status(volume, leader, error))
        return shown

    def _read_stored(self, volume: str) -> _Shown:
        running = self.store.running_workflow(volume)
        last = self.store.last_workflow(volume)
        paused = self.paused(volume)
        try:
            desired = self.store.get_desired(volume)
        except UnreadableRecord:
            desired = None  # the decision says why
        return _Shown(desired, running, last, paused, fence.latest(self.store, volume))

    def _volume_status(self, volume: Volume, leader: str | None, error: str | None) -> VolumeStatus:
        stored = self._stored.get(volume.name) or _Shown(None, None, None, False)
        desired, running, last = stored.desired, stored.running, stored.last
        status = self._replication.get(volume.name)
        decision = self._decisions.get(volume.name)
        health = {
            r.name: self._health[(volume.name, r.name)].reason
            for r in volume.replicas
            if (volume.name, r.name) in self._health
        }
        group = self.config.group_of(volume.name)
        return VolumeStatus(
            name=volume.name,
            mode=volume.mode,
            state=volume_state(volume, desired, running.kind if running else None),
            group=group.name if group else None,
            active=desired.active if desired else volume.replicas[0].name,
            offered=desired.offered if desired else None,
            fenced=desired.fenced if desired else (),
            storage_fence=_storage_fence(stored.storage_fence),
            replication=status.mirror_state if status else MirrorState.UNKNOWN,
            lag_s=status.lag.total_seconds() if status and status.lag else None,
            health=health,
            last_action=f"{last.kind}: {last.status}" if last else None,
            since=last.updated if last else None,
            decision=str(decision) if decision else None,
            preserved=tuple(_preserved(last.data)) if last else (),
            paused=stored.paused,
            leader=leader,
            store_error=error,
        )

    def history(self, volume: str | None, after: int, limit: int) -> list[JournalEntry]:
        """The journal; a member's comes with its group's entries (the group's workflows)."""
        group = self.config.group_of(volume) if volume is not None else None
        if group is None:
            events = self.store.events(volume, after=after, limit=limit)
        else:
            both = [
                e
                for n in (volume, group.name)
                for e in self.store.events(n, after=after, limit=limit)
            ]
            events = sorted(both, key=lambda e: e.id)[:limit]
        return [JournalEntry.of(e) for e in events]

    def alive(self) -> bool:
        return time.monotonic() - self._last_cycle < max(3 * self.interval, 10.0)

    def metrics_state(self) -> list[VolumeMetrics]:
        """What a scrape reports; never raises. The journal's counts are left out (None)
        while the store does not answer."""
        return [self._volume_metrics(item) for item in self.status()]

    def _volume_metrics(self, item: VolumeStatus) -> VolumeMetrics:
        error = item.store_error
        failovers = None
        if error is None:
            try:
                failovers = self.store.count_events(item.name, "fence-source", "after")
                if item.group is not None:  # the failovers of its group's workflows
                    step = f"fence-source:{item.name}"
                    failovers += self.store.count_events(item.group, step, "after")
            except StoreError as exc:
                error = str(exc)
        return VolumeMetrics(
            volume=item.name,
            state=item.state,
            replication_lag_seconds=item.lag_s,
            failovers_total=failovers,
            probe_latency_seconds=tuple(
                LatencySample(replica=replica, seconds=seconds)
                for (volume, replica), seconds in self._latencies.items()
                if volume == item.name
            ),
            store_error=error,
        )
