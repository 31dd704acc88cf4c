"""The storage fence of a failed-over volume, journaled and tried again until the old
source's storage takes it: the failover's step, the loop's tries, the failback's steps,
and a kill between journaling what the fence replaces and changing it. The provider is
the real ONTAP one against its contract server (no lab, no live cluster)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nfs_failover.config import Config, Volume, load_config
from nfs_failover.controller import fence
from nfs_failover.controller.fence import FenceState, Happened, StorageFence
from nfs_failover.controller.lease import LeaseLost
from nfs_failover.controller.workflows import (
    CRASH_ENV,
    CRASH_EXIT,
    Context,
    fence_storage,
    require_storage_fence,
    unfence_storage,
)
from nfs_failover.desired import failed_over, normal
from nfs_failover.errors import NfsFailoverError
from nfs_failover.replication import Provider
from nfs_failover.replication.ontap import OntapProvider
from nfs_failover.store import SqliteStore
from tests.helpers import EXAMPLES, PYTHON
from tests.replication.ontap_contract_server import ContractServer
from tests.replication.test_ontap import DESTINATION, POLL, SOURCE
from tests.replication.test_ontap import volume as ontap_volume

VOLUMES = "/api/storage/volumes"
ORIGINAL = [["sys"], ["never"]]  # rw_rule of the source's two export rules, as set up
FENCED = [["never"], ["never"]]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ContractServer]:
    with ContractServer(tmp_path) as contract:
        contract.add_relationship(SOURCE, DESTINATION, state="broken_off")
        yield contract


@pytest.fixture
def volume(server: ContractServer, tmp_path: Path) -> Volume:
    return ontap_volume(server, tmp_path)


@pytest.fixture
def store(tmp_path: Path, volume: Volume) -> Iterator[SqliteStore]:
    """A store whose desired state is the failover's: the old source fenced in the maps."""
    opened = SqliteStore(tmp_path / "state.db")
    opened.set_desired(failed_over(volume, 1), expected_generation=None)
    yield opened
    opened.close()


@pytest.fixture
def config() -> Config:
    return load_config(EXAMPLES / "crr.yaml")


def context(config: Config, volume: Volume, store: SqliteStore) -> Context:
    ctx = Context(config, volume, OntapProvider(volume, poll_interval=POLL), store)
    ctx.step_timeout = 10.0
    ctx.data["workflow"] = 7
    return ctx


def step(ctx: Context, *steps: object) -> None:
    async def go() -> None:
        try:
            for one in steps:
                await one(ctx)  # type: ignore[operator]
        finally:
            await ctx.provider.close()

    asyncio.run(go())


def journal(store: SqliteStore) -> list[tuple[str, object]]:
    return [
        (str(e.detail["state"]), e.detail["saved"])
        for e in store.events("crr")
        if e.kind == fence.KIND
    ]


def saved_rules(store: SqliteStore) -> object:
    record = fence.latest(store, "crr")
    assert record is not None and record.saved is not None
    return record.saved["rules"]


def test_a_failover_that_reaches_the_old_source_fences_it_at_once_and_journals_each_move(
    config: Config, volume: Volume, store: SqliteStore, server: ContractServer
) -> None:
    step(context(config, volume, store), fence_storage)

    assert server.rw_rules(SOURCE) == FENCED
    assert server.rw_rules(DESTINATION) == ORIGINAL
    original = [{"index": 1, "rw_rule": ["sys"]}, {"index": 2, "rw_rule": ["never"]}]
    assert [state for state, _ in journal(store)] == ["pending", "fencing", "fenced"]
    assert saved_rules(store) == original
    record = fence.latest(store, "crr")
    assert record is not None
    assert (record.replica, record.workflow, record.open) == ("site1", 7, False)


def test_an_old_source_that_does_not_answer_leaves_the_fence_pending_without_failing(
    config: Config, volume: Volume, store: SqliteStore, server: ContractServer
) -> None:
    server.fail("GET", VOLUMES, 404, "entry doesn't exist", "4", times=None)
    ctx = context(config, volume, store)
    step(ctx, fence_storage)  # does not raise: the failover goes on

    assert ctx.data["storage_fence"] == "pending"
    record = fence.latest(store, "crr")
    assert record is not None and record.state is FenceState.PENDING
    assert record.error is not None and "HTTP 404" in record.error
    assert server.rw_rules(SOURCE) == ORIGINAL


def test_the_loop_tries_a_pending_fence_again_until_the_old_source_answers(
    config: Config,
    volume: Volume,
    store: SqliteStore,
    server: ContractServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fence, "RETRY_EVERY", 0.0)
    server.fail("GET", VOLUMES, 404, "entry doesn't exist", "4", times=None)
    step(context(config, volume, store), fence_storage)
    provider = OntapProvider(volume, poll_interval=POLL)

    async def cycles() -> None:
        retrier = fence.Retrier(store)
        try:
            retrier.poke("crr", provider)  # still unreachable: the same error again
            await retrier.settle()
            server.clear_faults()  # the zone is back
            retrier.poke("crr", provider)
            await retrier.settle()
        finally:
            await retrier.close()
            await provider.close()

    asyncio.run(cycles())
    assert server.rw_rules(SOURCE) == FENCED
    # A failure is journaled when its reason is new, not at every try.
    assert [state for state, _ in journal(store)] == ["pending", "pending", "fencing", "fenced"]


def test_the_loop_leaves_a_pending_fence_to_a_running_failback(
    config: Config, volume: Volume, store: SqliteStore, server: ContractServer
) -> None:
    server.fail("GET", VOLUMES, 404, "entry doesn't exist", "4", times=None)
    step(context(config, volume, store), fence_storage)
    server.clear_faults()
    store.start_workflow("crr", "failback", {})
    provider = OntapProvider(volume, poll_interval=POLL)

    async def cycle() -> None:
        retrier = fence.Retrier(store)
        retrier.poke("crr", provider)
        await retrier.settle()
        await provider.close()

    asyncio.run(cycle())
    assert server.rw_rules(SOURCE) == ORIGINAL
    record = fence.latest(store, "crr")
    assert record is not None and record.state is FenceState.PENDING


def test_the_loop_never_fences_a_replica_the_maps_offer_again(
    config: Config, volume: Volume, store: SqliteStore, server: ContractServer
) -> None:
    server.fail("GET", VOLUMES, 404, "entry doesn't exist", "4", times=None)
    step(context(config, volume, store), fence_storage)
    server.clear_faults()
    store.set_desired(normal(volume, False), expected_generation=1)  # aborted and steered back
    provider = OntapProvider(volume, poll_interval=POLL)

    async def cycle() -> None:
        retrier = fence.Retrier(store)
        retrier.poke("crr", provider)
        await retrier.settle()
        await provider.close()

    asyncio.run(cycle())
    assert server.rw_rules(SOURCE) == ORIGINAL


def test_a_failback_fences_a_pending_old_source_first_or_waits(
    config: Config, volume: Volume, store: SqliteStore, server: ContractServer
) -> None:
    server.fail("GET", VOLUMES, 404, "entry doesn't exist", "4", times=None)
    step(context(config, volume, store), fence_storage)
    with pytest.raises(NfsFailoverError, match=r"storage fence of site1 pending.*failback waits"):
        step(context(config, volume, store), require_storage_fence)

    server.clear_faults()
    step(context(config, volume, store), require_storage_fence)
    assert server.rw_rules(SOURCE) == FENCED


def test_the_failback_restores_the_rules_the_fence_saved_and_status_drops_it(
    config: Config, volume: Volume, store: SqliteStore, server: ContractServer
) -> None:
    step(context(config, volume, store), fence_storage)
    step(context(config, volume, store), unfence_storage, unfence_storage)

    assert server.rw_rules(SOURCE) == ORIGINAL
    assert [state for state, _ in journal(store)][-1] == "unfenced"
    assert len(server.calls("PATCH", "/rules/")) == 2  # one to fence, one to restore


_FENCE = """
import asyncio, sys
from pathlib import Path
from nfs_failover.config import Volume, load_config
from nfs_failover.controller.workflows import Context, fence_storage
from nfs_failover.replication.ontap import OntapProvider
from nfs_failover.store import SqliteStore
volume = Volume.model_validate_json(open(sys.argv[1]).read())
ctx = Context(load_config(sys.argv[2]), volume, OntapProvider(volume, poll_interval=0.002),
              SqliteStore(Path(sys.argv[3])), step_timeout=10)
ctx.data["workflow"] = 7
asyncio.run(fence_storage(ctx))
"""


@pytest.mark.parametrize("landed", [False, True], ids=["before-the-change", "after-it"])
def test_a_kill_between_journaling_the_saved_rules_and_changing_them_loses_nothing(
    config: Config,
    volume: Volume,
    store: SqliteStore,
    server: ContractServer,
    tmp_path: Path,
    landed: bool,
) -> None:
    saved = tmp_path / "volume.json"
    saved.write_text(volume.model_dump_json())
    killed = subprocess.run(
        [*PYTHON, "-c", _FENCE, str(saved), str(EXAMPLES / "crr.yaml"), str(tmp_path / "state.db")],
        env={**os.environ, CRASH_ENV: fence.SAVED_CRASH},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert killed.returncode == CRASH_EXIT, killed.stderr
    assert [state for state, _ in journal(store)] == ["pending", "fencing"]
    assert server.rw_rules(SOURCE) == ORIGINAL  # killed before the change
    original = saved_rules(store)
    if landed:  # as if the change had reached ONTAP just before the kill
        for rule in server.policies[1].rules.values():
            rule.rw_rule = ["never"]

    step(context(config, volume, store), require_storage_fence)  # the failback's first step
    assert server.rw_rules(SOURCE) == FENCED
    assert saved_rules(store) == original  # the first saved state, not what the storage shows
    step(context(config, volume, store), unfence_storage)
    assert server.rw_rules(SOURCE) == ORIGINAL


def test_a_provider_without_a_storage_fence_is_recorded_once_and_never_tried_again(
    store: SqliteStore,
) -> None:
    class MapsOnly(Provider):  # the contract's default: no storage fence
        name = "maps-only"

        async def status(self, *, timeout: float) -> object:  # type: ignore[override]
            raise AssertionError("not called")

        transfer_now = break_ = resync = reverse_resync = divergence = status  # type: ignore[assignment]

    async def go() -> StorageFence:
        record = await fence.want(store, "crr", "site1", None)
        return await fence.attempt(store, MapsOnly(), record, timeout=1)

    record = asyncio.run(go())
    assert record.state is FenceState.UNSUPPORTED and not record.open
    assert "cannot fence site1 at the storage" in record.reason


def test_the_table_refuses_a_move_it_does_not_have_and_keeps_the_first_saved_state() -> None:
    record = StorageFence("crr", "site1", FenceState.UNFENCED, 0.0, "").after(Happened.WANTED)
    first = record.after(Happened.SAVING, saved={"rules": [1]})
    again = first.after(Happened.SAVING, saved={"rules": [2]}).after(
        Happened.DONE, saved={"rules": [3]}
    )
    assert (again.state, again.saved) == (FenceState.FENCED, {"rules": [1]})
    assert again.reason == "site1 refuses writes at the storage"
    with pytest.raises(ValueError, match="wanted while fenced"):
        again.after(Happened.WANTED)


def test_a_lease_lost_once_the_saved_rules_are_journaled_leaves_the_change_to_the_next_leader(
    volume: Volume, store: SqliteStore, server: ContractServer
) -> None:
    checks: list[int] = []

    def guard() -> None:  # the lease: valid at the try, lost once the saved state is journaled
        checks.append(1)
        if len(checks) > 1:
            raise LeaseLost("not the leader any more")

    async def go() -> StorageFence:
        provider = OntapProvider(volume, poll_interval=POLL)
        try:
            record = await fence.want(store, "crr", "site1", 7)
            with pytest.raises(LeaseLost):
                await fence.attempt(store, provider, record, timeout=10, guard=guard)
            assert server.rw_rules(SOURCE) == ORIGINAL
            left = fence.latest(store, "crr")
            assert left is not None and left.state is FenceState.FENCING
            return await fence.attempt(store, provider, left, timeout=10)  # the next leader
        finally:
            await provider.close()

    record = asyncio.run(go())
    assert record.state is FenceState.FENCED
    assert server.rw_rules(SOURCE) == FENCED
    assert saved_rules(store) == [
        {"index": 1, "rw_rule": ["sys"]},
        {"index": 2, "rw_rule": ["never"]},
    ]
