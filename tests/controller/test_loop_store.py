"""What one controller cycle asks of the store, without the lab: a config of many volume
pairs on the local engine over plain folders, whose exports are on a loopback address
where nothing listens (each probe fails at once), and a real sqlite store."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

from nfs_failover.config import Config, Volume
from nfs_failover.controller.decide import Action, Decision
from nfs_failover.controller.loop import Controller
from nfs_failover.desired import failed_over, normal
from nfs_failover.store import Event, SqliteStore, Store


class Counting:
    """A store that counts the calls made to it, by method."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        found = getattr(self.store, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return found(*args, **kwargs)

        return counted if callable(found) else found


def volumes_config(folder: Path, count: int) -> Config:
    made = []
    for i in range(count):
        name = f"vol{i:03d}"
        for side in ("source", "destination"):
            (folder / name / side).mkdir(parents=True)
        made.append(
            Volume.model_validate(
                {
                    "name": name,
                    "mode": "read-write",
                    "replicas": [
                        {"name": "site1", "export": f"127.0.0.2:/{name}-site1"},
                        {"name": "dest1", "export": f"127.0.0.2:/{name}-dest1"},
                    ],
                    "replication": {
                        "provider": "local",
                        "source_path": str(folder / name / "source"),
                        "destination_path": str(folder / name / "destination"),
                        "state_dir": str(folder / name / "state"),
                    },
                }
            )
        )
    return Config.model_validate({"volumes": made, "policy": {"failover_after": "10m"}})


def reads_of_a_cycle(folder: Path, count: int) -> Counter[str]:
    """The store calls of a controller's second cycle over ``count`` volumes, less the
    journal's appends (a decision whose reason changed is journaled, per volume)."""
    config = volumes_config(folder / "volumes", count)
    sqlite = SqliteStore(folder / "state.db")
    for volume in config.volumes:
        sqlite.set_desired(normal(volume, False), expected_generation=None)
    store = Counting(sqlite)
    controller = Controller(config, store, name="ctl-test")  # type: ignore[arg-type]

    async def cycles() -> None:
        try:
            await controller.cycle()
            store.calls.clear()
            await controller.cycle()
        finally:
            await controller.close()

    asyncio.run(cycles())
    sqlite.close()
    del store.calls["append"]
    return store.calls


def test_the_store_reads_of_a_cycle_do_not_grow_with_the_volumes(tmp_path: Path) -> None:
    few = reads_of_a_cycle(tmp_path / "few", 2)
    many = reads_of_a_cycle(tmp_path / "many", 40)

    assert many == few


def test_each_volume_is_decided_on_its_own_desired_state_pause_and_workflow(
    tmp_path: Path,
) -> None:
    config = volumes_config(tmp_path / "volumes", 4)
    store = SqliteStore(tmp_path / "state.db")
    first, second, third, fourth = config.volumes
    store.set_desired(normal(first, False), expected_generation=None)
    store.set_desired(failed_over(second, 1), expected_generation=None)
    store.append(Event(third.name, "pause", {"by": "operator"}))
    store.append(Event(first.name, "resume", {"by": "operator"}))
    running = store.start_workflow(fourth.name, "failover", {})
    store.advance_workflow(running.id, 2, {})
    controller = Controller(config, store, name="ctl-test")

    async def plan() -> dict[str, str]:
        try:
            return {name: str(d) for name, d in (await controller.plan()).items()}
        finally:
            await controller.close()

    decisions = asyncio.run(plan())
    store.close()

    # The time a replica has been seen down depends on the probes': left out.
    assert {name: reason.split(": down for")[0] for name, reason in decisions.items()} == {
        first.name: "no action: source site1 suspect",
        second.name: "failed over: clients stay on dest1; source site1 suspect",
        third.name: "paused: no automatic action (manual commands still run)",
        fourth.name: "resume: resuming failover at step 2",
    }


def test_a_decision_whose_reason_only_counts_time_is_journaled_once(tmp_path: Path) -> None:
    config = volumes_config(tmp_path / "volumes", 1)
    store = SqliteStore(tmp_path / "state.db")
    controller = Controller(config, store, name="ctl-test")
    suspect = "no action: source site1 suspect: down for {}s of a 600s grace ({} of 3 see it down)"
    for seconds, down in ((0, 1), (1.5, 1), (2, 1), (2.5, 2)):
        controller._remember("vol000", Decision(Action.NONE, suspect.format(seconds, down)))
    controller._remember("vol000", Decision(Action.FAILOVER, "source site1 down"))

    reasons = [e.detail["reason"] for e in store.events("vol000") if e.kind == "decision"]
    store.close()

    assert reasons == [suspect.format(0, 1), suspect.format(2.5, 2), "source site1 down"]
    assert str(controller.decision("vol000")) == "failover: source site1 down"
