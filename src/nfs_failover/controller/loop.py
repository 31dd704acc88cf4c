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
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from nfs_failover.agent import Agent
from nfs_failover.config import Config, Mode, Volume
from nfs_failover.controller import fence, workflows
from nfs_failover.controller.decide import Action, Decision, Observed, VolumeState, decide
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
    def read(cls, store: Store, volumes: Sequence[str]) -> Stored:
        """Blocking: call it in a worker thread. A volume missing from ``all_desired`` is
        read alone, so that an unreadable record is its error, never "no record"."""
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
        last = store.last_events(["*", *volumes], ["pause", "resume"])
        paused = frozenset(v for v in volumes if _paused(last.get("*"), last.get(v)))
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
        await self._observe(now)
        stored = await asyncio.to_thread(Stored.read, self.store, self._names)
        decisions: dict[str, Decision] = {}
        for volume in self.config.volumes:
            decision = await self._decide(volume, now, stored)
            if not self.leader:
                holder = self.keeper.seen_holder or "another controller"
                decision = Decision(Action.NONE, f"standby: {holder} holds the lease")
            await asyncio.to_thread(self._remember, volume.name, decision)
            decisions[volume.name] = decision
            if self.leader and decision.action is not Action.NONE:
                await self._start(volume, decision)
            elif self.leader and _fences_maps(stored.desired.get(volume.name)):
                # A failed-over volume: its storage fence, if still pending, is tried again.
                self._fences.poke(volume.name, self.providers[volume.name])
        return decisions

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
        stored = await asyncio.to_thread(Stored.read, self.store, self._names)
        plans = {}
        for volume in self.config.volumes:
            plans[volume.name] = await self._decide(volume, now, stored)
            self._decisions[volume.name] = plans[volume.name]
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

    async def _decide(self, volume: Volume, now: float, stored: Stored) -> Decision:
        running = stored.running.get(volume.name)
        if volume.name in stored.unreadable:  # this volume waits for a readable row
            return Decision(Action.NONE, f"no action: {stored.unreadable[volume.name]}")
        desired = stored.desired.get(volume.name)
        status, error = await self._replication_status(volume)
        source, destination = (self._health_of(volume.name, r.name, now) for r in volume.replicas)
        in_flight = volume.name in self._tasks and not self._tasks[volume.name].done()
        seen = Observed(
            volume=volume,
            policy=self.config.effective_policy(volume),
            state=volume_state(volume, desired, running.kind if running else None),
            source=source,
            destination=destination,
            replication=status,
            replication_error=error,
            paused=volume.name in stored.paused,
            running_workflow=(
                f"{running.kind} at step {running.step}" if running and not in_flight else None
            ),
        )
        if in_flight:
            return Decision(Action.NONE, f"{running.kind if running else 'workflow'} in progress")
        return decide(seen)

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

    def _remember(self, volume: str, decision: Decision) -> None:
        before = self._decisions.get(volume)
        self._decisions[volume] = decision
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

    def _launch(
        self, volume: Volume, kind: str, *, resume: Workflow | None = None, force: bool = False
    ) -> asyncio.Task[None]:
        ctx = workflows.Context(
            self.config,
            volume,
            self.providers[volume.name],
            self.store,
            force=force,
            step_timeout=self.step_timeout,
            on_desired=self._wake,
            guard=self.keeper.guard,
        )

        async def go() -> None:
            try:
                await workflows.run(ctx, kind, resume=resume)
                log.info("%s: %s done", volume.name, kind)
            except workflows.Refused as exc:
                log.warning("%s: %s refused: %s", volume.name, kind, exc)
            except NfsFailoverError as exc:
                log.error("%s: %s stopped, to be resumed: %s", volume.name, kind, exc)

        task = asyncio.create_task(go(), name=f"{kind}:{volume.name}")
        self._tasks[volume.name] = task
        return task

    # -- pause, and the operator's requests --------------------------------------------------

    def paused(self, volume: str) -> bool:
        last = self.store.last_events(["*", volume], ["pause", "resume"])
        return _paused(last.get("*"), last.get(volume))

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
        target = next((v for v in self.config.volumes if v.name == volume), None)
        read_only = target is not None and target.mode is Mode.READ_ONLY
        kind = (MANUAL_READ_ONLY if read_only else MANUAL).get(action)
        if read_only and kind is None and action in MANUAL:
            raise NfsFailoverError(f"volume {volume}: {action} needs a read-write volume")
        if kind is None or target is None:
            raise NfsFailoverError(f"unknown action {action!r} or volume {volume!r}")
        if await asyncio.to_thread(self.store.running_workflow, target.name) is not None:
            raise NfsFailoverError(f"volume {target.name}: a workflow is already running")
        task = self._launch(target, kind, force=force)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not task.cancelled() or (current is not None and current.cancelling()):
                raise  # the request itself was cancelled: the workflow goes on
            raise NfsFailoverError(
                f"{kind} {target.name}: stopped, this controller lost its lease; the next"
                " leader resumes it at its step"
            ) from None
        last = await asyncio.to_thread(self.store.last_workflow, target.name)
        if last is None or last.status != "done":
            refusal = await asyncio.to_thread(self._last_refusal, target.name)
            reason = refusal or "stopped; it resumes on the next cycle"
            raise NfsFailoverError(f"{kind} {target.name}: {reason}")
        return WorkflowResult(action=action, volume=target.name, workflow=last.id, status="done")

    async def _abort(self, volume: str | None, *, force: bool) -> AbortResult:
        """End the running workflow where it stands (journaled): the way out of one that
        cannot finish. Refused past its point of no return (a break, a reverse resync)
        unless forced; the answer says what state the volume is left in."""
        target = next((v for v in self.config.volumes if v.name == volume), None)
        if target is None:
            raise NfsFailoverError(f"unknown volume {volume!r}")
        running = await asyncio.to_thread(self.store.running_workflow, target.name)
        if running is None:
            raise NfsFailoverError(f"volume {target.name}: no workflow is running")
        steps = [name for name, _ in workflows.WORKFLOWS[running.kind]]
        at = steps[running.step] if running.step < len(steps) else "its end"
        past = workflows.past_no_return(running.kind, running.step)
        if past and not force:
            raise NfsFailoverError(
                f"volume {target.name}: {running.kind} is past {past} (at {at}); aborting it"
                " leaves the replication as that step left it: use --force to abort anyway"
            )
        task = self._tasks.get(target.name)
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, NfsFailoverError):
                await task
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
        return VolumeStatus(
            name=volume.name,
            mode=volume.mode,
            state=volume_state(volume, desired, running.kind if running else None),
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
        return [JournalEntry.of(e) for e in self.store.events(volume, after=after, limit=limit)]

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
