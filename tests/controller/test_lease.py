"""The leader lease and a store that does not answer, without the lab: a real etcd on
loopback, the ANF contract server, controllers in this process and as processes.

A controller that loses its lease (another holder took the key, or etcd hangs) cancels
its workflow before the lease could be granted to another; the workflow stays running in
the journal at its step, and the next leader resumes it. A store that does not answer is
said once, decides nothing, and leaves status answering.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from nfs_failover.agent import Agent, Cycle
from nfs_failover.config import Config
from nfs_failover.controller import workflows
from nfs_failover.controller.decide import Decision
from nfs_failover.controller.loop import LEASE, Controller
from nfs_failover.errors import NfsFailoverError
from nfs_failover.replication.anf import AnfProvider
from nfs_failover.store import EtcdStore, Event
from tests.controller.lease_child import ENV
from tests.controller.lease_helpers import (
    WAIT,
    LogEvents,
    ProcessLines,
    capture_logs,
    config_for,
    with_stand_in,
)
from tests.helpers import CLI, REPO, TOKEN
from tests.replication.anf_contract_server import ContractServer, contract_server, volume_id
from tests.replication.anf_helpers import DESTINATION_VOLUME, SOURCE_VOLUME, sdk_client
from tests.store.etcd_server import EtcdServer

STEPS = [name for name, _ in workflows.WORKFLOWS["failover"]]


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """An etcd of this module's own: its tests stop it (SIGSTOP) and let it go again."""
    server = EtcdServer(tmp_path_factory.mktemp("lease-etcd"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def anf(tmp_path: Path) -> Iterator[ContractServer]:
    authority = trustme.CA()
    ca_path = tmp_path / "anf-ca.pem"
    authority.cert_pem.write_to_path(str(ca_path))
    with contract_server(
        authority, ca_path, volume_id(SOURCE_VOLUME), volume_id(DESTINATION_VOLUME)
    ) as server:
        yield server


@pytest.fixture
def prefix() -> str:
    return f"/lease-{uuid.uuid4().hex[:12]}/"


@pytest.fixture
def logs() -> Iterator[LogEvents]:
    yield from capture_logs()


@contextlib.contextmanager
def stopped(etcd: EtcdServer) -> Iterator[None]:
    """etcd hung (SIGSTOP) for the block: it keeps its connections and answers nothing."""
    assert etcd.process is not None
    os.kill(etcd.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(etcd.process.pid, signal.SIGCONT)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class Seen(EtcdStore):
    """The etcd store, telling a test when a step's journal entry was written."""

    def __init__(self, etcd: EtcdServer, prefix: str, watched: tuple[str, str]) -> None:
        super().__init__([etcd.endpoint], settings=etcd.settings(prefix), timeout=1.0)
        self.watched = watched
        self.reached = threading.Event()

    def append(self, event: Event) -> int:
        entry = super().append(event)
        if (event.step, event.phase) == self.watched:
            self.reached.set()
        return entry


def controller(
    config: Config, store: EtcdStore, name: str, anf: ContractServer, **options: object
) -> Controller:
    provider = AnfProvider(
        config.volumes[0], client=sdk_client(anf.url, anf.ca_path), polling_interval=0
    )
    return Controller(
        config,
        store,
        name=name,
        providers={"crr": provider},
        step_timeout=WAIT,
        **options,  # type: ignore[arg-type]
    )


async def wait_log(logs: LogEvents, text: str, *, logger: str = "", after: int = 0) -> int:
    index, _ = await asyncio.to_thread(logs.wait_for, text, logger=logger, after=after)
    return index


# -- a lease lost mid-workflow ---------------------------------------------------------------


@pytest.mark.parametrize("how", ["key-taken", "etcd-hung"])
def test_a_lost_lease_cancels_the_workflow_in_time_and_the_next_leader_resumes_it_at_its_step(
    how: str,
    etcd: EtcdServer,
    anf: ContractServer,
    prefix: str,
    tmp_path: Path,
    logs: LogEvents,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = config_for(anf.url, etcd, prefix, tmp_path / "a")
    # confirm-writable runs for as long as its step timeout: nothing answers NFS here.
    store_a = Seen(etcd, prefix, ("confirm-writable", "before"))
    first = controller(config, store_a, "ctl-a", anf)
    lease_key = f"{prefix}leases/{LEASE}"

    async def lose_the_lease() -> str:
        stop = asyncio.Event()
        running = asyncio.create_task(first.run(stop))
        await wait_log(logs, "ctl-a holds the lease")
        failover = asyncio.create_task(first.request("failover", "crr"))
        assert await asyncio.to_thread(store_a.reached.wait, WAIT)
        if how == "key-taken":  # another holder writes the key (no etcd lease under it)
            etcd.post("/v3/kv/put", {"key": b64(lease_key), "value": b64("intruder")})
            await wait_log(logs, "failover:crr cancelled")
        else:
            with stopped(etcd):
                await wait_log(logs, "failover:crr cancelled")
                stop.set()  # stopped while etcd hangs: it cannot take the lease back
                await asyncio.wait_for(running, WAIT)
        with pytest.raises(NfsFailoverError, match="lost its lease") as refused:
            await failover
        stop.set()
        await asyncio.wait_for(running, WAIT)
        await first.close()
        if how == "key-taken":
            etcd.post("/v3/kv/deleterange", {"key": b64(lease_key)})
        return str(refused.value)

    asyncio.run(lose_the_lease())
    lost_at = logs.lines[logs.wait_for("failover:crr cancelled")[0]][0]
    expires = first.keeper.lease.expires
    assert expires is not None and lost_at < expires  # before another could be granted it
    reader = EtcdStore([etcd.endpoint], settings=etcd.settings(prefix))
    left = reader.running_workflow("crr")
    assert left is not None and left.step == STEPS.index("confirm-writable")
    assert reader.count_events("crr", "confirm-writable", "after") == 0

    # The next leader: the same step, standing in for the NFS write this time.
    monkeypatch.setitem(workflows.WORKFLOWS, "failover", with_stand_in())
    second = controller(
        config,
        EtcdStore([etcd.endpoint], settings=etcd.settings(prefix), timeout=1.0),
        "ctl-b",
        anf,
    )

    async def resume() -> str | None:
        stop = asyncio.Event()
        running = asyncio.create_task(second.run(stop))
        try:
            await wait_log(logs, "crr: failover done")
            return (await asyncio.to_thread(second.status))[0].leader
        finally:
            stop.set()
            await asyncio.wait_for(running, WAIT)
            await second.close()

    assert asyncio.run(resume()) == "ctl-b"
    cancelled = logs.wait_for("failover:crr cancelled")[0]
    assert cancelled < logs.wait_for("ctl-b holds the lease")[0]
    done = reader.last_workflow("crr")
    assert done is not None and (done.id, done.status) == (left.id, "done")
    assert reader.count_events("crr", "confirm-writable", "before") == 2  # cut short, resumed
    assert reader.count_events("crr", "break", "after") == 1
    assert len(anf.posts("breakReplication")) == 1
    desired = reader.get_desired("crr")
    assert desired is not None and (desired.offered, desired.fenced) == (("dest1",), ("site1",))
    reader.close()


def test_a_manual_action_longer_than_the_lease_keeps_it_without_the_loop(
    etcd: EtcdServer,
    anf: ContractServer,
    prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = config_for(anf.url, etcd, prefix, tmp_path / "a")
    past_first_validity = threading.Event()
    first_end: list[float] = []

    class Renewals(EtcdStore):
        def acquire_lease(
            self, name: str, holder: str, ttl: float, *, timeout: float | None = None
        ) -> bool:
            held = super().acquire_lease(name, holder, ttl, timeout=timeout)
            if held and first_end and time.monotonic() > first_end[0]:
                past_first_validity.set()  # renewed after the first grant would have ended
            return held

    async def outlasts(ctx: workflows.Context) -> None:  # a step longer than the validity
        first_end.append(time.monotonic() + alone.keeper.lease.left())
        assert await asyncio.to_thread(past_first_validity.wait, WAIT)

    steps = dict(with_stand_in())
    steps["post-hooks"] = outlasts
    monkeypatch.setitem(workflows.WORKFLOWS, "failover", tuple(steps.items()))
    store = Renewals([etcd.endpoint], settings=etcd.settings(prefix), timeout=1.0)
    alone = controller(config, store, "ctl-a", anf)

    async def main() -> object:
        try:
            return await alone.request("failover", "crr")  # no run(): no loop renews it
        finally:
            await alone.close()
            store.close()

    result = asyncio.run(main())
    assert getattr(result, "status", None) == "done"


# -- manual actions go to the leader only ----------------------------------------------------


def test_a_standby_refuses_a_manual_action_and_names_the_leader(
    etcd: EtcdServer, anf: ContractServer, prefix: str, tmp_path: Path
) -> None:
    config = config_for(anf.url, etcd, prefix, tmp_path / "a")

    def store() -> EtcdStore:
        return EtcdStore([etcd.endpoint], settings=etcd.settings(prefix), timeout=1.0)

    async def main() -> list[str]:
        leader = controller(config, store(), "ctl-a", anf)
        standby = controller(config, store(), "ctl-b", anf)
        refusals = []
        try:
            assert await leader.keeper.renew() is None
            for action, volume in [("failover", "crr"), ("abort", "crr"), ("pause", None)]:
                with pytest.raises(NfsFailoverError) as refused:
                    await standby.request(action, volume)
                refusals.append(str(refused.value))
            await leader.request("pause", None)  # the leader renews and acts
            return refusals
        finally:
            await leader.close()
            await standby.close()

    refusals = asyncio.run(main())
    assert refusals == ["controller ctl-a holds the lease; send the request to it"] * 3
    reader = store()
    assert reader.last_workflow("crr") is None  # nothing ran on the standby
    pause = reader.last_event(["*"], ["pause", "resume"])
    assert pause is not None and pause.kind == "pause"
    reader.close()


def test_a_controller_that_cannot_reach_the_store_refuses_a_manual_action(
    etcd: EtcdServer, anf: ContractServer, prefix: str, tmp_path: Path
) -> None:
    config = config_for(anf.url, etcd, prefix, tmp_path / "a")
    store = EtcdStore([etcd.endpoint], settings=etcd.settings(prefix), timeout=0.5)

    async def main() -> str:
        alone = controller(config, store, "ctl-a", anf)
        try:
            with stopped(etcd), pytest.raises(NfsFailoverError) as refused:
                await alone.request("failover", "crr")
            return str(refused.value)
        finally:
            await alone.close()
            store.close()

    refusal = asyncio.run(main())
    assert refusal.startswith("store unreachable (")
    assert refusal.endswith("); this controller cannot hold the lease")
    assert len(anf.posts()) == 0


# -- two controller processes, the leader killed in the middle of a failover -----------------


@pytest.mark.parametrize("crash_at", ["break", "confirm-writable"])
def test_the_standby_process_takes_over_a_killed_leaders_failover_and_breaks_once(
    crash_at: str, etcd: EtcdServer, anf: ContractServer, prefix: str, tmp_path: Path
) -> None:
    configs = {name: config_for(anf.url, etcd, prefix, tmp_path / name) for name in "ab"}
    env = {**os.environ, ENV: f"{anf.url} {anf.ca_path}"}
    # Killed right before the break, or right after it (before the next step).
    crash = {workflows.CRASH_ENV: f"failover:{STEPS.index(crash_at)}"}

    def start(name: str, extra: dict[str, str]) -> ProcessLines:
        argv = [sys.executable, "-m", "tests.controller.lease_child", "controller"]
        process = subprocess.Popen(
            [*argv, "--config", str(tmp_path / name / "config.yaml")],
            cwd=REPO,  # where the child imports tests.controller from
            env={**env, **extra},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        return ProcessLines(process)

    leader = start("a", crash)
    standby: ProcessLines | None = None
    try:
        leader.wait_for(f":{leader.process.pid} holds the lease")
        standby = start("b", {})
        standby.wait_for("crr: standby: controller@")
        listen = configs["a"].api.listen
        with contextlib.suppress(httpx.TransportError):  # it dies before it answers
            httpx.post(
                f"http://{listen}/volumes/crr/failover",
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=WAIT,
            )
        assert leader.process.wait(WAIT) == workflows.CRASH_EXIT
        standby.wait_for("crr: failover done")
        shown = subprocess.run(
            [*CLI, "status", "--config", str(tmp_path / "b" / "config.yaml"), "--json"],
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=True,
        )
    finally:
        for running in (leader, standby):
            if running is not None and running.process.poll() is None:
                running.process.send_signal(signal.SIGTERM)
                try:
                    running.process.wait(WAIT)
                except subprocess.TimeoutExpired:
                    running.process.kill()
                    running.process.wait(WAIT)
    (volume,) = json.loads(shown.stdout)
    assert volume["leader"] == f"controller@{os.uname().nodename}:{standby.process.pid}"
    assert (volume["state"], volume["fenced"], volume["store_error"]) == (
        "failed-over",
        ["site1"],
        None,
    )
    assert len(anf.posts("breakReplication")) == 1


# -- a store that does not answer ----------------------------------------------------------------


class Counted(Controller):
    """A controller that says when each cycle ended."""

    def __init__(self, *args: object, **options: object) -> None:
        super().__init__(*args, **options)  # type: ignore[arg-type]
        self.cycled = asyncio.Event()

    async def cycle(self) -> dict[str, Decision]:
        try:
            return await super().cycle()
        finally:
            self.cycled.set()


class CountedAgent(Agent):
    def __init__(self, *args: object, **options: object) -> None:
        super().__init__(*args, **options)  # type: ignore[arg-type]
        self.cycled = asyncio.Event()

    async def cycle(self) -> Cycle:
        try:
            return await super().cycle()
        finally:
            self.cycled.set()


async def passes(event: asyncio.Event, count: int) -> None:
    """Until ``count`` more cycles have ended."""
    for _ in range(count):
        event.clear()
        await asyncio.wait_for(event.wait(), WAIT)


def test_a_hung_store_is_said_once_leaves_the_maps_and_status_answers_with_its_error(
    etcd: EtcdServer, anf: ContractServer, prefix: str, tmp_path: Path, logs: LogEvents
) -> None:
    client = tmp_path / "client"
    config = config_for(anf.url, etcd, prefix, tmp_path / "c", autofs_root=client)
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("")
    map_file = config.autofs.under_root(config.autofs.map_file)

    def store() -> EtcdStore:
        return EtcdStore([etcd.endpoint], settings=etcd.settings(prefix), timeout=0.5)

    agent = CountedAgent(config, store(), name="client1", mountinfo=mountinfo, store_timeout=0.5)
    provider = AnfProvider(
        config.volumes[0], client=sdk_client(anf.url, anf.ca_path), polling_interval=0
    )
    ctl = Counted(
        config, store(), name="ctl-c", providers={"crr": provider}, agents=[agent], step_timeout=5
    )

    async def main() -> tuple[object, ...]:
        stop = asyncio.Event()
        running = asyncio.create_task(ctl.run(stop))
        try:
            await wait_log(logs, "ctl-c holds the lease")
            await wait_log(logs, "maps rewritten")
            before = map_file.read_text()
            with stopped(etcd):
                await wait_log(logs, "store unreachable", logger="nfs_failover.controller")
                await wait_log(logs, "store unreachable", logger="nfs_failover.agent")
                await wait_log(logs, "lease lost: ")
                await passes(ctl.cycled, 3)
                await passes(agent.cycled, 3)
                during = await asyncio.to_thread(ctl.status)
                metrics = await asyncio.to_thread(ctl.metrics_state)
                decision = ctl.decision("crr")
                maps_during = map_file.read_text()
            mark = len(logs.lines)
            await wait_log(
                logs, "store answers again", logger="nfs_failover.controller", after=mark
            )
            await wait_log(logs, "store answers again", logger="nfs_failover.agent", after=mark)
            await wait_log(logs, "leader again", after=mark)
            await passes(ctl.cycled, 1)
            after = await asyncio.to_thread(ctl.status)
            return before, maps_during, during, metrics, decision, after
        finally:
            stop.set()
            await asyncio.wait_for(running, WAIT)
            await ctl.close()
            await agent.close()

    before, maps_during, during, metrics, decision, after = asyncio.run(main())
    assert maps_during == before  # the maps were left as they are
    (shown,) = during  # type: ignore[misc]
    assert shown.store_error is not None and shown.leader is None
    assert shown.active == "site1"  # what the store last said
    (scraped,) = metrics  # type: ignore[misc]
    assert scraped.failovers_total is None and scraped.store_error is not None
    assert str(decision).startswith("no action: store unreachable (")
    (back,) = after  # type: ignore[misc]
    assert (back.store_error, back.leader) == (None, "ctl-c")
    for logger in ("nfs_failover.controller", "nfs_failover.agent"):
        assert logs.count("store unreachable", logger=logger) == 1, logger
        assert logs.count("store answers again", logger=logger) == 1, logger
    assert logs.count("lease lost: ") == 1
