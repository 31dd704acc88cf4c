"""The controller's loop on the real lab: outages, guardrails, restarts, pause."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from nfs_failover.agent import Agent, Cycle
from nfs_failover.config import Config, Failback, Mode, Volume
from nfs_failover.controller.decide import Action, Decision, VolumeState
from nfs_failover.controller.loop import Controller
from nfs_failover.controller.snapshot import (
    AbortResult,
    ActionResult,
    VolumeStatus,
    WorkflowResult,
)
from nfs_failover.controller.workflows import WORKFLOWS
from nfs_failover.errors import NfsFailoverError
from nfs_failover.lab import Lab
from nfs_failover.replication import MirrorState
from nfs_failover.replication.local import LocalProvider
from nfs_failover.store import SqliteStore
from tests.controller.helpers import FAST, config_for
from tests.replication.helpers import T, folders

pytestmark = pytest.mark.lab


@pytest.fixture
def setup(
    replication_lab: Lab, volume: Volume, tmp_path: Path
) -> Iterator[tuple[Config, SqliteStore]]:
    (folders(volume)[0] / "base").write_text("replicated")
    config = config_for(replication_lab, volume, tmp_path, **FAST)
    engine = LocalProvider(config.volumes[0])
    asyncio.run(engine.transfer_now(timeout=T))
    asyncio.run(engine.close())
    store = SqliteStore(tmp_path / "state.db")
    yield config, store
    store.close()


async def cycles(controller: Controller, seconds: float) -> list[dict[str, Decision]]:
    """Run the loop's cycles for a while; the decisions of each."""
    seen = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        seen.append(await controller.cycle())
        await asyncio.sleep(controller.interval)
    await controller.settle(T)  # let a started workflow finish
    return seen


def run_controller(config: Config, store: SqliteStore, lab: Lab | None, script: str) -> Controller:
    """A controller through ``script``: "outage:S" cuts az1 for S seconds, "run:S" waits."""

    async def main() -> Controller:
        controller = Controller(config, store, name="ctl-test", step_timeout=T)
        try:
            for part in script.split():
                what, seconds = part.split(":")
                if what == "outage" and lab is not None:
                    lab.outage("az1")
                    try:
                        await cycles(controller, float(seconds))
                    finally:
                        lab.restore("az1")
                else:
                    await cycles(controller, float(seconds))
            return controller
        finally:
            await controller.close()

    return asyncio.run(main())


def test_an_outage_shorter_than_the_grace_period_changes_nothing(
    replication_lab: Lab, setup: tuple[Config, SqliteStore]
) -> None:
    config, store = setup
    run_controller(config, store, replication_lab, "run:0.5 outage:1.2 run:1.5")
    assert store.get_desired("crr") is None
    assert store.last_workflow("crr") is None
    decisions = [e.detail["action"] for e in store.events("crr") if e.kind == "decision"]
    assert set(decisions) == {"none"}


def test_a_real_outage_fails_over_and_the_source_stays_fenced_across_a_restart(
    replication_lab: Lab, setup: tuple[Config, SqliteStore], volume: Volume
) -> None:
    config, store = setup
    run_controller(config, store, replication_lab, "outage:3.5 run:2")
    desired = store.get_desired("crr")
    assert desired is not None and (desired.offered, desired.fenced) == (("dest1",), ("site1",))
    # A new controller on the same store, with the source back and stable.
    restarted = run_controller(config, store, None, "run:2")
    assert store.get_desired("crr") == desired
    status = restarted.status()[0]
    assert (status.state, status.fenced) == (VolumeState.FAILED_OVER, ("site1",))
    assert "until `failback crr` (failback: manual)" in str(status.decision)


def test_a_lag_above_max_lag_refuses_and_status_says_why(
    replication_lab: Lab, volume: Volume, tmp_path: Path
) -> None:
    config = config_for(
        replication_lab, volume, tmp_path, **FAST, max_lag=timedelta(milliseconds=1)
    )
    engine = LocalProvider(config.volumes[0])
    asyncio.run(engine.transfer_now(timeout=T))
    asyncio.run(engine.close())
    store = SqliteStore(tmp_path / "state.db")
    controller = run_controller(config, store, replication_lab, "outage:3.5")
    assert store.get_desired("crr") is None
    decision = str(controller.status()[0].decision)
    assert "no failover: lag" in decision and "exceeds max_lag 1ms" in decision


def test_pause_stops_automatic_failover_and_manual_failback_works(
    replication_lab: Lab, setup: tuple[Config, SqliteStore]
) -> None:
    config, store = setup

    async def paused_then_failback() -> tuple[list[dict[str, Decision]], ActionResult]:
        controller = Controller(config, store, name="ctl-test", step_timeout=T)
        try:
            await controller.request("pause", None)
            replication_lab.outage("az1")
            try:
                seen = await cycles(controller, 3.5)
            finally:
                replication_lab.restore("az1")
            await controller.request("resume", None)
            await controller.request("failover", "crr")  # manual commands run while paused too
            result = await controller.request("failback", "crr")
            return seen, result
        finally:
            await controller.close()

    seen, result = asyncio.run(paused_then_failback())
    assert all(d["crr"].action is Action.NONE for d in seen)
    assert seen[-1]["crr"].reason.startswith("paused")
    assert isinstance(result, WorkflowResult) and result.status == "done"
    desired = store.get_desired("crr")
    assert desired is not None and (desired.offered, desired.fenced) == (("site1",), ())


def test_a_read_only_volume_fails_over_and_fails_back_on_its_own(
    replication_lab: Lab, setup: tuple[Config, SqliteStore], volume: Volume, tmp_path: Path
) -> None:
    _, store = setup
    read_only = volume.model_copy(
        update={
            "mode": Mode.READ_ONLY,
            "mount": volume.mount.model_copy(update={"options": "ro,hard,tcp,vers=3,nolock"}),
        }
    )
    config = config_for(replication_lab, read_only, tmp_path, **FAST, failback=Failback.AUTOMATIC)
    run_controller(config, store, replication_lab, "outage:3.5")
    during = store.get_desired("crr")
    assert during is not None and (during.offered, during.fenced) == (("dest1",), ())
    engine = LocalProvider(config.volumes[0])
    assert asyncio.run(engine.status(timeout=T)).mirror_state is MirrorState.MIRRORED
    asyncio.run(engine.close())
    run_controller(config, store, None, "run:3")  # source back and stable for recover_after
    after = store.get_desired("crr")
    assert after is not None and after.offered == ("site1", "dest1")


def test_a_second_controller_on_the_same_store_stands_by(
    replication_lab: Lab, setup: tuple[Config, SqliteStore]
) -> None:
    config, store = setup

    async def two() -> tuple[dict[str, Decision], dict[str, Decision]]:
        first = Controller(config, store, name="ctl-a", step_timeout=T)
        second = Controller(config, SqliteStore(store.path), name="ctl-b", step_timeout=T)
        try:
            return await first.cycle(), await second.cycle()
        finally:
            await first.close()
            await second.close()

    leader, standby = asyncio.run(two())
    assert leader["crr"].reason.startswith("no action")
    assert standby["crr"].reason == "standby: ctl-a holds the lease"


def test_a_switchover_moves_clients_with_nothing_left_behind(
    replication_lab: Lab, setup: tuple[Config, SqliteStore], volume: Volume
) -> None:
    config, store = setup
    source, destination = folders(volume)

    async def switch() -> ActionResult:
        controller = Controller(config, store, name="ctl-test", step_timeout=T)
        try:
            (source / "written-just-before").write_text("must arrive")
            return await controller.request("switchover", "crr")
        finally:
            await controller.close()

    switched = asyncio.run(switch())
    assert isinstance(switched, WorkflowResult) and switched.status == "done"
    assert (destination / "written-just-before").read_text() == "must arrive"
    desired = store.get_desired("crr")
    assert desired is not None and (desired.offered, desired.fenced) == (("dest1",), ("site1",))


def test_abort_ends_a_stuck_workflow_and_says_where_it_left_the_volume(
    setup: tuple[Config, SqliteStore],
) -> None:
    config, store = setup
    stuck = store.start_workflow("crr", "failover", {"force": False})  # before its break

    async def abort() -> ActionResult:
        controller = Controller(config, store, name="ctl-test", step_timeout=T)
        try:
            with pytest.raises(NfsFailoverError, match="a workflow is already running"):
                await controller.request("failover", "crr")
            return await controller.request("abort", "crr")
        finally:
            await controller.close()

    result = asyncio.run(abort())
    assert result.model_dump(mode="json") == {
        "action": "abort",
        "volume": "crr",
        "workflow": stuck.id,
        "kind": "failover",
        "at": "check-replication",
        "state": "normal",
        "group": None,  # a volume alone
        "states": {},
    }
    assert store.running_workflow("crr") is None
    last = store.last_workflow("crr")
    assert last is not None and last.status == "aborted"
    (event,) = [e for e in store.events("crr") if e.kind == "abort"]
    assert event.detail["by"] == "operator" and event.detail["forced"] is False


def test_abort_past_a_break_needs_force(setup: tuple[Config, SqliteStore]) -> None:
    config, store = setup
    stuck = store.start_workflow("crr", "failover", {"force": False})
    names = [name for name, _ in WORKFLOWS["failover"]]
    store.advance_workflow(stuck.id, names.index("confirm-writable"), {})

    async def abort(force: bool) -> ActionResult:
        controller = Controller(config, store, name="ctl-test", step_timeout=T)
        try:
            return await controller.request("abort", "crr", force=force)
        finally:
            await controller.close()

    with pytest.raises(NfsFailoverError, match=r"failover is past break \(at confirm-writable\)"):
        asyncio.run(abort(False))
    assert store.running_workflow("crr") is not None  # unchanged
    forced = asyncio.run(abort(True))
    assert isinstance(forced, AbortResult) and forced.at == "confirm-writable"
    assert store.running_workflow("crr") is None


def test_a_corrupt_desired_state_row_is_named_in_the_decision_and_status(
    setup: tuple[Config, SqliteStore],
) -> None:
    config, store = setup
    with contextlib.closing(sqlite3.connect(store.path)) as db, db:  # behind the store's back
        db.execute("INSERT INTO desired VALUES ('crr', 1, '{\"volume\": \"crr\"}', 0)")

    async def look() -> tuple[dict[str, Decision], list[VolumeStatus]]:
        controller = Controller(config, store, name="ctl-test", step_timeout=T)
        try:
            return await controller.plan(), controller.status()
        finally:
            await controller.close()

    plans, status = asyncio.run(look())
    assert plans["crr"].action is Action.NONE
    assert str(plans["crr"].reason) == (
        "no action: desired state of volume crr: unreadable row (missing 'offered'):"
        ' \'{"volume": "crr"}\''
    )
    assert status[0].name == "crr"


def test_a_slow_agent_cycle_never_delays_the_controllers_decisions(
    setup: tuple[Config, SqliteStore],
) -> None:
    config, store = setup

    class SlowAgent(Agent):
        async def cycle(self) -> Cycle:  # a hung mount's check on a remote client, say
            await asyncio.sleep(30)
            raise AssertionError("not reached")

    class Counting(Controller):
        cycles = 0

        async def cycle(self) -> dict[str, Decision]:
            Counting.cycles += 1
            return await super().cycle()

    async def main() -> None:
        agent = SlowAgent(config, store, name="slow")
        controller = Counting(config, store, name="ctl-test", step_timeout=T, agents=[agent])
        stop = asyncio.Event()
        running = asyncio.create_task(controller.run(stop))
        await asyncio.sleep(2.0)
        stop.set()
        await asyncio.wait_for(running, timeout=40)
        await controller.close()
        await agent.close()

    asyncio.run(main())
    assert Counting.cycles >= 4  # every 0.2 s, while the agent's one cycle still runs


def test_a_store_that_waits_never_stalls_the_event_loop(
    setup: tuple[Config, SqliteStore],
) -> None:
    config, store = setup

    async def main() -> float:
        controller = Controller(config, store, name="ctl-test", step_timeout=T)
        gaps: list[float] = []

        async def ticker(stop: asyncio.Event) -> None:
            last = time.monotonic()
            while not stop.is_set():
                await asyncio.sleep(0.02)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        stop = asyncio.Event()
        ticking = asyncio.create_task(ticker(stop))
        held = threading.Event()

        def hold_the_store() -> None:  # as a locked database would, for 1.5 s
            with store._lock:
                held.set()
                time.sleep(1.5)

        holder = threading.Thread(target=hold_the_store)
        holder.start()
        held.wait()
        try:
            await controller.cycle()
        finally:
            stop.set()
            await ticking
            holder.join()
            await controller.close()
        return max(gaps)

    assert asyncio.run(main()) < 0.5  # the loop went on while the store waited
