"""A group's workflow: one journaled workflow that moves every member volume, step by step.

Its steps are the volume workflow's, each run for every member in the group's order
(``break:data``, ``break:logs``) before the next step starts, so every member's guardrails
(``check-replication:*``) pass before any member is broken, and once one member is broken
the workflow only stops, never ends half way: it is resumed at its step until every member
is failed over. The record and the journal entries go under the group's name; each member
also holds a workflow record of its own (``claim-members``) that names the group's, so
the store's one-running-workflow-per-volume rule keeps every member from starting another
meanwhile, and every check of "a workflow runs on this volume" sees it. The members'
records end with the group's, just before it, carrying each member's own data.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from nfs_failover.config import Config, Group
from nfs_failover.controller.workflows import (
    NO_RETURN,
    WORKFLOWS,
    Context,
    Refused,
    StepFn,
    run_steps,
)
from nfs_failover.store import Store, StoreError, Workflow

GROUP_WORKFLOW = "group_workflow"  # a member's record: the id of the group's workflow
CLAIM = "claim-members"

GroupStepFn = Callable[["GroupContext"], Awaitable[None]]


@dataclass
class GroupContext:
    """A group's workflow: its members' contexts (each with its own provider), in order."""

    config: Config
    group: Group
    members: Mapping[str, Context]
    store: Store
    kind: str = ""
    force: bool = False
    data: dict[str, object] = field(default_factory=dict)
    guard: Callable[[], None] | None = None

    def check(self) -> None:
        if self.guard is not None:
            self.guard()

    def member(self, name: str) -> Context:
        """The member's context, its data the member's part of the group's (journaled
        with it after every step)."""
        ctx = self.members[name]
        ctx.force = self.force
        ctx.data = member_data(self.data, name)
        return ctx


def member_data(data: dict[str, object], name: str) -> dict[str, object]:
    """The member's part of a group workflow's data, made when missing. Its ``workflow``
    is the group's: preserved copies and storage fences name it."""
    members = data.get("members")
    if not isinstance(members, dict):
        members = data["members"] = {}
    own = members.get(name)
    if not isinstance(own, dict):
        own = members[name] = {}
    own["workflow"] = data.get("workflow")
    return own


def is_claim(workflow: Workflow, group_workflow: int | None = None) -> bool:
    """Whether a volume's workflow record is a group's hold on it (that group's, if given)."""
    held = workflow.data.get(GROUP_WORKFLOW)
    return held is not None and (group_workflow is None or held == group_workflow)


async def claim_members(ctx: GroupContext) -> None:
    """Every member gets a running workflow record naming the group's, or the group is
    refused before it changed anything: a member that runs a workflow of its own."""
    store, workflow = ctx.store, ctx.data.get("workflow")
    for name in ctx.group.volumes:
        running = await asyncio.to_thread(store.running_workflow, name)
        if running is None:
            ctx.check()
            claim = {"group": ctx.group.name, GROUP_WORKFLOW: workflow}
            try:
                await asyncio.to_thread(store.start_workflow, name, ctx.kind, claim)
                continue
            except StoreError:  # lost a race, or the answer was lost: read again
                running = await asyncio.to_thread(store.running_workflow, name)
                if running is None:
                    raise
        if is_claim(running, workflow if isinstance(workflow, int) else None):
            continue
        raise Refused(
            f"volume {name} runs a {running.kind} of its own (workflow {running.id}); group"
            f" {ctx.group.name} waits for it to end"
        )


def _for_member(step: StepFn, name: str) -> GroupStepFn:
    async def run(ctx: GroupContext) -> None:
        try:
            await step(ctx.member(name))
        except Refused as exc:
            raise Refused(f"volume {name}: {exc}") from exc

    return run


def group_steps(kind: str, group: Group) -> tuple[tuple[str, GroupStepFn], ...]:
    """The group's steps: ``claim-members``, then each step of the volume workflow once
    per member, named ``STEP:VOLUME``."""
    steps: list[tuple[str, GroupStepFn]] = [(CLAIM, claim_members)]
    for name, step in WORKFLOWS[kind]:
        steps += [(f"{name}:{member}", _for_member(step, member)) for member in group.volumes]
    return tuple(steps)


def past_no_return(kind: str, group: Group, step: int) -> str | None:
    """The step of no return (the first member's) that the group's workflow has reached at
    index ``step``, or None."""
    name = NO_RETURN.get(kind)
    if name is None:
        return None
    names = [n for n, _ in group_steps(kind, group)]
    first = names.index(f"{name}:{group.volumes[0]}")
    return names[first] if step >= first else None


async def finish_group(
    store: Store,
    group: Group,
    workflow: int,
    status: str,
    data: dict[str, object],
    *,
    guard: Callable[[], None] | None = None,
) -> None:
    """End the members' records (each with its part of ``data``), then the group's: a
    controller killed in between finds the group running, and ends it again."""
    for name in group.volumes:
        running = await asyncio.to_thread(store.running_workflow, name)
        if running is None or not is_claim(running, workflow):
            continue
        if guard is not None:
            guard()
        own = {**running.data, **member_data(dict(data), name)}
        await asyncio.to_thread(store.advance_workflow, running.id, running.step, own)
        await asyncio.to_thread(store.finish_workflow, running.id, status)
    if guard is not None:
        guard()
    await asyncio.to_thread(store.finish_workflow, workflow, status)


async def run_group(ctx: GroupContext, kind: str, *, resume: Workflow | None = None) -> Workflow:
    """Run (or resume) the group's workflow to its end, as ``workflows.run`` does a
    volume's: journaled before and after each step, resumable at every index."""
    ctx.kind = kind

    async def finish(workflow: Workflow, status: str) -> None:
        await finish_group(ctx.store, ctx.group, workflow.id, status, ctx.data, guard=ctx.guard)

    return await run_steps(
        ctx,
        ctx.group.name,
        kind,
        group_steps(kind, ctx.group),
        resume=resume,
        label=f"group-{kind}",
        finish=finish,
        start={"volumes": list(ctx.group.volumes)},
    )
