"""Workflows: fixed lists of idempotent steps, journaled before and after each one.

Each step first reads the real state (the provider's, the store's) and does only what
is still missing, so a controller killed at any point re-runs the interrupted step
safely on restart. The desired state never offers clients two writable replicas: a
read-write failover first withdraws the destination from the offer, breaks, confirms
the destination takes writes, and only then offers the destination alone, fencing the
old source.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from nfs_failover.config import Config, Volume
from nfs_failover.controller import fence
from nfs_failover.controller.decide import replication_limitation
from nfs_failover.controller.hooks import HookFailed, run_hook
from nfs_failover.desired import VolumeDesired, failed_over, normal
from nfs_failover.errors import NfsFailoverError, ProviderError
from nfs_failover.nfs_tree import copy_out
from nfs_failover.pacing import Deadline, Pacer
from nfs_failover.probe import Prober
from nfs_failover.replication import Progress, Provider
from nfs_failover.store import Event, Store, Workflow

# "KIND:STEP" ("group-KIND:STEP" for a group's): exit hard before that step (tests)
CRASH_ENV = "NFS_FAILOVER_CRASH_AT"
CRASH_EXIT = 70


class Refused(NfsFailoverError):
    """A guardrail stopped the workflow before it changed anything."""


@dataclass
class Context:
    config: Config
    volume: Volume
    provider: Provider
    store: Store
    force: bool = False
    step_timeout: float = 300.0
    progress: Progress | None = None
    data: dict[str, object] = field(default_factory=dict)
    on_desired: Callable[[], None] | None = None  # told when the desired state changed
    # Called before each step and each write of the workflow's progress; raises (the
    # controller's: "not the leader any more") when this controller may no longer act.
    guard: Callable[[], None] | None = None

    def check(self) -> None:
        if self.guard is not None:
            self.guard()

    @property
    def source(self) -> str:
        return self.volume.replicas[0].name

    @property
    def destination(self) -> str:
        return self.volume.replicas[1].name


StepFn = Callable[[Context], Awaitable[None]]


# -- steps ---------------------------------------------------------------------------------


async def check_replication(ctx: Context) -> None:
    """The guardrails of a read-write failover: mirrored, healthy, lag within max_lag."""
    policy = ctx.config.effective_policy(ctx.volume)
    status = await ctx.provider.status(timeout=ctx.step_timeout)
    limitation = replication_limitation(status, policy)
    ctx.data["replication"] = f"{status.mirror_state}, lag {status.lag}"
    if limitation is None:
        return
    if not ctx.force:
        raise Refused(f"no failover: {limitation}")
    ctx.data["forced"] = limitation


async def withdraw_destination(ctx: Context) -> None:
    """Offer no read-only fallback while the destination is about to become writable."""
    await _set_desired(ctx, lambda now: _offer(ctx, (ctx.source,), now.generation + 1))


async def break_replication(ctx: Context) -> None:
    result = await ctx.provider.break_(
        force=ctx.force, timeout=ctx.step_timeout, progress=ctx.progress
    )
    ctx.data["break_changed"] = result.changed


async def confirm_writable(ctx: Context) -> None:
    """The destination must really take writes before clients are sent to it."""
    export = ctx.volume.replicas[1].export
    pacer = Pacer(Deadline(ctx.step_timeout))
    async with Prober(timeout=min(2.0, ctx.step_timeout), keep=False) as prober:
        while True:
            result = await prober.probe(export, check_write=True)
            if result.writable:
                return
            if not await pacer.pause():
                raise NfsFailoverError(
                    f"{ctx.destination} does not take writes after {pacer.attempts} tries in"
                    f" {ctx.step_timeout:g}s: {result.summary()}"
                )


async def fence_source(ctx: Context) -> None:
    await _set_desired(ctx, lambda current: failed_over(ctx.volume, current.generation + 1))


async def fence_storage(ctx: Context) -> None:
    """The old source refuses writes at the storage too, for clients no map steers. One
    short try: when it does not answer (its zone is down), the fence stays pending and the
    controller tries again each cycle (``controller/fence.py``)."""
    workflow = ctx.data.get("workflow")
    record = await fence.want(
        ctx.store, ctx.volume.name, ctx.source, workflow if isinstance(workflow, int) else None
    )
    timeout = min(ctx.step_timeout, fence.FIRST_TRY)
    record = await fence.attempt(ctx.store, ctx.provider, record, timeout=timeout, guard=ctx.guard)
    ctx.data["storage_fence"] = record.state.value


async def require_storage_fence(ctx: Context) -> None:
    """A failback touches the old source only once it refuses writes at the storage: a
    fence still pending is done now (the old source answers), or the failback waits."""
    record = await fence.current(ctx.store, ctx.volume.name)
    if record is None or not record.open:
        return
    record = await fence.attempt(
        ctx.store, ctx.provider, record, timeout=ctx.step_timeout, guard=ctx.guard
    )
    ctx.data["storage_fence"] = record.state.value
    if record.open:
        raise NfsFailoverError(f"volume {ctx.volume.name}: {record.reason}; the failback waits")


async def unfence_storage(ctx: Context) -> None:
    """The old source gets back what the storage fence replaced, just before clients are
    steered back to it (until then nobody needs to write there)."""
    record = await fence.current(ctx.store, ctx.volume.name)
    if record is None or record.state is fence.FenceState.UNFENCED:
        return
    ctx.check()
    record = await fence.lift(ctx.store, ctx.provider, record, timeout=ctx.step_timeout)
    ctx.data["storage_fence"] = record.state.value


async def steer_to_destination(ctx: Context) -> None:
    """Read-only failover: clients read from the destination; replication untouched."""
    await _set_desired(ctx, lambda now: _offer(ctx, (ctx.destination,), now.generation + 1))


async def steer_back(ctx: Context) -> None:
    policy = ctx.config.effective_policy(ctx.volume)
    await _set_desired(
        ctx,
        lambda current: _with_generation(
            normal(ctx.volume, policy.read_only_fallback), current.generation + 1
        ),
    )


def _hooks(kind: str) -> StepFn:
    async def run(ctx: Context) -> None:
        hooks = ctx.config.hooks
        # from_ is the replica clients leave, to_ the one they go to: reversed on failback.
        leave, go = ctx.volume.replicas
        if kind.endswith("failback"):
            leave, go = go, leave
        group = ctx.config.group_of(ctx.volume.name)
        values = {
            "volume": ctx.volume.name,
            "event": kind,
            "from_replica": leave.name,
            "to_replica": go.name,
            "from_export": str(leave.export),
            "to_export": str(go.export),
            "group": group.name if group else "",
            "members": ",".join(group.volumes if group else (ctx.volume.name,)),
        }
        for hook in getattr(hooks, kind):
            try:
                await run_hook(hook, values, hooks.timeout_for(hook).total_seconds())
            except HookFailed as exc:
                if kind.startswith("pre_"):
                    raise Refused(f"{kind} hook failed: {exc}") from exc
                failures = [*_strings(ctx.data.get("hook_failures")), str(exc)]
                ctx.data["hook_failures"] = failures

    return run


async def _set_desired(ctx: Context, make: Callable[[VolumeDesired], VolumeDesired]) -> None:
    """Compare-and-swap the volume's desired state; a state already in place is kept."""
    policy = ctx.config.effective_policy(ctx.volume)
    stored = await asyncio.to_thread(ctx.store.get_desired, ctx.volume.name)
    current = stored or normal(ctx.volume, policy.read_only_fallback)
    wanted = make(current)
    if (wanted.offered, wanted.active, wanted.fenced) == (
        current.offered,
        current.active,
        current.fenced,
    ) and stored is not None:
        return
    expected = None if stored is None else stored.generation
    ctx.check()  # the write clients follow: never sent once the lease may be another's
    if not await asyncio.to_thread(ctx.store.set_desired, wanted, expected_generation=expected):
        raise NfsFailoverError(f"volume {ctx.volume.name}: desired state changed meanwhile")
    await asyncio.to_thread(
        ctx.store.append,
        Event(
            ctx.volume.name,
            "desired",
            {
                "offered": list(wanted.offered),
                "fenced": list(wanted.fenced),
                "generation": wanted.generation,
            },
        ),
    )
    if ctx.on_desired is not None:
        ctx.on_desired()


def _offer(ctx: Context, offered: tuple[str, ...], generation: int) -> VolumeDesired:
    return VolumeDesired(ctx.volume.name, offered, offered[0], (), generation)


def _with_generation(desired: VolumeDesired, generation: int) -> VolumeDesired:
    return VolumeDesired(
        desired.volume, desired.offered, desired.active, desired.fenced, generation
    )


async def check_source_answers(ctx: Context) -> None:
    """Failback needs the old source to answer over NFS; refuse early when it does not."""
    async with Prober(timeout=min(5.0, ctx.step_timeout), keep=False) as prober:
        result = await prober.probe(ctx.volume.replicas[0].export)
    if not result.up:
        raise Refused(f"no failback: source {ctx.source} {result.summary()}")


def _preserve(label: str) -> StepFn:
    """Copy out over NFS what the next reverse resync would overwrite: the files that
    changed on the provider's current source since the last common point."""

    async def run(ctx: Context) -> None:
        status = await ctx.provider.status(timeout=ctx.step_timeout)
        found = await ctx.provider.divergence(timeout=ctx.step_timeout)
        export = next(r.export for r in ctx.volume.replicas if r.name == status.source)
        target = preserved_dir(ctx) / label
        # Users' data: readable by root only, like the store beside it.
        for folder in (*reversed(target.parents[:3]), target):
            folder.mkdir(mode=0o700, exist_ok=True)
            folder.chmod(0o700)
        copied, missing = await copy_out(
            export, list(found.source_only), target, timeout=ctx.step_timeout
        )
        ctx.data[f"preserved_{label}"] = {
            "from": status.source,
            "folder": str(target),
            "files": copied,
            "deleted": missing,
        }

    return run


def preserved_dir(ctx: Context) -> Path:
    """Where a failback keeps what it saved: beside the store, per volume and workflow."""
    base = ctx.config.store.sqlite_path
    root = base.parent if base is not None else Path("/var/lib/nfs-failover")
    return root / "preserved" / ctx.volume.name / str(ctx.data.get("workflow", "manual"))


async def reverse_resync(ctx: Context) -> None:
    result = await ctx.provider.reverse_resync(timeout=ctx.step_timeout, progress=ctx.progress)
    ctx.data.setdefault("overwritten", [])
    ctx.data["overwritten"] = [*_strings(ctx.data["overwritten"]), *result.overwritten]


async def final_transfer(ctx: Context) -> None:
    """One more transfer now, given ``transfer_wait``; a provider without on-demand
    transfers (ANF) is noted, and what changed since its last scheduled one is preserved
    before being overwritten."""
    wait = ctx.config.effective_policy(ctx.volume).transfer_wait.total_seconds()
    try:
        await ctx.provider.transfer_now(timeout=wait, progress=ctx.progress)
    except ProviderError as exc:
        if exc.code != "unsupported":
            raise
        ctx.data["final_transfer"] = f"skipped: {exc}"


async def quiesce_source(ctx: Context) -> None:
    """Writes stop on the current source (the old destination), so the next transfer
    carries everything: where the provider can, nothing is left to preserve."""
    try:
        await ctx.provider.quiesce_source(timeout=ctx.step_timeout)
    except ProviderError as exc:
        if exc.code != "unsupported":
            raise
        ctx.data["quiesce"] = f"skipped: {exc}"


# -- the workflows -------------------------------------------------------------------------

WORKFLOWS: dict[str, tuple[tuple[str, StepFn], ...]] = {
    "failover": (
        ("check-replication", check_replication),
        ("pre-hooks", _hooks("pre_failover")),
        ("withdraw-destination", withdraw_destination),
        ("break", break_replication),
        ("confirm-writable", confirm_writable),
        ("fence-source", fence_source),
        ("fence-storage", fence_storage),
        ("post-hooks", _hooks("post_failover")),
    ),
    "failback": (
        ("check-source", check_source_answers),
        ("fence-storage", require_storage_fence),
        ("preserve-old-source", _preserve("old-source")),
        ("pre-hooks", _hooks("pre_failback")),
        ("reverse-resync", reverse_resync),
        ("final-transfer", final_transfer),
        ("quiesce", quiesce_source),
        ("last-transfer", final_transfer),
        ("break-reverse", break_replication),
        ("preserve-late-writes", _preserve("late-writes")),
        ("unfence-storage", unfence_storage),
        ("steer-back", steer_back),
        ("resync-original", reverse_resync),
        ("post-hooks", _hooks("post_failback")),
    ),
    "switchover": (
        ("check-replication", check_replication),
        ("pre-hooks", _hooks("pre_failover")),
        ("withdraw-destination", withdraw_destination),
        ("final-transfer", final_transfer),
        ("break", break_replication),
        ("confirm-writable", confirm_writable),
        ("fence-source", fence_source),
        ("fence-storage", fence_storage),
        ("post-hooks", _hooks("post_failover")),
    ),
    "failover-read-only": (("steer-to-destination", steer_to_destination),),
    "failback-read-only": (("steer-back", steer_back),),
}


# The first step after which stopping a workflow leaves the storage changed: an abort
# from there on needs --force.
NO_RETURN = {"failover": "break", "switchover": "break", "failback": "reverse-resync"}


def past_no_return(kind: str, step: int) -> str | None:
    """The step of no return that workflow ``kind`` has reached at index ``step`` (it may
    be running it now), or None."""
    name = NO_RETURN.get(kind)
    names = [n for n, _ in WORKFLOWS[kind]]
    if name is None or step < names.index(name):
        return None
    return name


class Journaled(Protocol):
    """What ``run_steps`` needs of a workflow's context: a volume's, or a group's."""

    store: Store
    force: bool
    data: dict[str, object]

    def check(self) -> None: ...


C = TypeVar("C", bound=Journaled)
Steps = Sequence[tuple[str, Callable[[C], Awaitable[None]]]]
Finish = Callable[[Workflow, str], Awaitable[None]]


async def run(ctx: Context, kind: str, *, resume: Workflow | None = None) -> Workflow:
    """Run (or resume) a volume's workflow to its end; journal every step before and after.

    A refusal ends the workflow as "refused" and is raised; any other error, the guard's
    included, leaves it running, to be resumed from the interrupted step. So does a
    cancellation (the controller lost its lease): whatever point it reaches, the journal
    says the step has not ended, or the progress has not moved past it, and the next
    leader runs that step again (each is idempotent).
    """
    store = ctx.store

    async def finish(workflow: Workflow, status: str) -> None:
        await asyncio.to_thread(store.finish_workflow, workflow.id, status)

    return await run_steps(
        ctx, ctx.volume.name, kind, WORKFLOWS[kind], resume=resume, label=kind, finish=finish
    )


async def run_steps(
    ctx: C,
    subject: str,
    kind: str,
    steps: Steps[C],
    *,
    resume: Workflow | None,
    label: str,
    finish: Finish,
    start: dict[str, object] | None = None,
) -> Workflow:
    """``run`` for any subject whose workflow record and journal entries go under the name
    ``subject`` (a volume, or a group): ``finish`` ends the record, ``label`` names the
    workflow for ``NFS_FAILOVER_CRASH_AT`` and ``start`` is the new record's data."""
    store = ctx.store
    # Every journal write in a worker thread: the event loop never waits for the store.
    workflow = resume
    ctx.check()
    if workflow is None:
        data = {"force": ctx.force, **(start or {})}
        workflow = await asyncio.to_thread(store.start_workflow, subject, kind, data)
    ctx.data = {**workflow.data, "workflow": workflow.id}
    for index in range(workflow.step, len(steps)):
        name, step = steps[index]
        ctx.check()
        await _journal(
            store, Event(subject, kind, {}, workflow=workflow.id, step=name, phase="before")
        )
        _crash_here(label, index)
        ctx.check()
        try:
            await step(ctx)
        except Refused as exc:
            refused: dict[str, object] = {"refused": str(exc)}
            ctx.check()
            await _journal(
                store, Event(subject, kind, refused, workflow=workflow.id, step=name, phase="after")
            )
            await finish(workflow, "refused")
            raise
        ctx.check()
        await _journal(
            store,
            Event(subject, kind, dict(ctx.data), workflow=workflow.id, step=name, phase="after"),
        )
        ctx.check()
        await asyncio.to_thread(store.advance_workflow, workflow.id, index + 1, ctx.data)
    ctx.check()
    await finish(workflow, "done")
    return workflow


async def _journal(store: Store, event: Event) -> None:
    await asyncio.to_thread(store.append, event)


def _strings(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _crash_here(label: str, index: int) -> None:
    """The test hook behind the kill-at-every-step proof: exit hard, no clean-up."""
    if os.environ.get(CRASH_ENV) == f"{label}:{index}":
        os._exit(CRASH_EXIT)
