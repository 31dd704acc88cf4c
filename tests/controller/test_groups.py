"""Volumes that fail over together, without the lab: two volume pairs replicated by ANF
(a contract server each, on loopback), a group of both, and the controller's group
workflow: one journaled workflow, every member's guardrails before any break, all or
nothing, resumed at any step after a kill.

No NFS server answers here (``lease_helpers``): the probes fail at once, so only manual
actions and resumed workflows move the group, and ``confirm-writable`` is stood in for.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
import yaml

from nfs_failover.config import Config, load_config
from nfs_failover.controller import groups, workflows
from nfs_failover.controller.loop import Controller
from nfs_failover.errors import NfsFailoverError
from nfs_failover.replication import Provider
from nfs_failover.replication.anf import AnfProvider
from nfs_failover.store import SqliteStore, StoreError
from tests.controller.lease_helpers import WAIT, with_stand_in
from tests.helpers import REPO
from tests.replication.anf_contract_server import ContractServer, contract_server, volume_id
from tests.replication.anf_helpers import sdk_client

MEMBERS = ("data", "logs")
HOSTS = ("127.0.0.1", "127.0.0.2")  # nothing answers NFS there


@pytest.fixture
def ca(tmp_path: Path) -> tuple[trustme.CA, Path]:
    authority = trustme.CA()
    path = tmp_path / "anf-ca.pem"
    authority.cert_pem.write_to_path(str(path))
    return authority, path


@pytest.fixture
def servers(ca: tuple[trustme.CA, Path]) -> Iterator[dict[str, ContractServer]]:
    """One contract server per volume pair, each with its own relationship."""
    authority, path = ca
    with (
        contract_server(authority, path, *pair("data")) as data,
        contract_server(authority, path, *pair("logs")) as logs,
    ):
        yield {"data": data, "logs": logs}


def pair(name: str) -> tuple[str, str]:
    return volume_id(f"vol-{name}-site1"), volume_id(f"vol-{name}-dest1")


@pytest.fixture
def config(servers: dict[str, ContractServer], tmp_path: Path) -> Config:
    volumes = [
        {
            "name": name,
            "mode": "read-write",
            "replicas": [
                {"name": "site1", "export": f"{HOSTS[0]}:/{name}-site1"},
                {"name": "dest1", "export": f"{HOSTS[1]}:/{name}-dest1"},
            ],
            "replication": {
                "provider": "anf",
                "source": pair(name)[0],
                "destination": pair(name)[1],
                "management_endpoint": servers[name].url,
            },
            "policy": {"read_only_fallback": True},
        }
        for name in MEMBERS
    ]
    raw = {
        "volumes": volumes,
        "groups": [{"name": "app", "volumes": list(MEMBERS)}],
        "policy": {"probe_interval": "200ms", "probe_timeout": "500ms", "failover_after": "1h"},
        "store": f"sqlite://{tmp_path / 'state.db'}",
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


@pytest.fixture
def store(config: Config) -> Iterator[SqliteStore]:
    assert config.store.sqlite_path is not None
    opened = SqliteStore(config.store.sqlite_path)
    yield opened
    opened.close()


@pytest.fixture(autouse=True)
def stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(workflows.WORKFLOWS, "failover", with_stand_in())


def providers(config: Config, servers: dict[str, ContractServer]) -> dict[str, Provider]:
    return {
        v.name: AnfProvider(
            v,
            client=sdk_client(servers[v.name].url, servers[v.name].ca_path),
            polling_interval=0,
        )
        for v in config.volumes
    }


def controller(
    config: Config, store: SqliteStore, servers: dict[str, ContractServer]
) -> Controller:
    return Controller(
        config, store, name="ctl", providers=providers(config, servers), step_timeout=WAIT
    )


def breaks(servers: dict[str, ContractServer]) -> dict[str, int]:
    return {name: len(server.posts("breakReplication")) for name, server in servers.items()}


def failed_over(store: SqliteStore, volume: str) -> bool:
    desired = store.get_desired(volume)
    return desired is not None and (desired.offered, desired.fenced) == (("dest1",), ("site1",))


def group_step_names(config: Config) -> list[str]:
    return [name for name, _ in groups.group_steps("failover", config.group("app"))]


# -- a failover of the group -------------------------------------------------------------------


def test_a_failover_asked_for_one_member_moves_the_whole_group_in_one_journaled_workflow(
    config: Config, store: SqliteStore, servers: dict[str, ContractServer]
) -> None:
    ctl = controller(config, store, servers)

    async def main() -> object:
        try:
            return await ctl.request("failover", "data")
        finally:
            await ctl.close()

    result = asyncio.run(main())

    assert result.model_dump(mode="json") == {  # type: ignore[attr-defined]
        "action": "failover",
        "volume": "data",
        "workflow": store.last_workflow("app").id,  # type: ignore[union-attr]
        "status": "done",
        "group": "app",
        "members": ["data", "logs"],
        "note": "volume data is in group app: the whole group failed over (data, logs)",
    }
    assert breaks(servers) == {"data": 1, "logs": 1}
    assert failed_over(store, "data") and failed_over(store, "logs")
    # One workflow, journaled under the group, each step per member, in order.
    steps = [e.step for e in store.events("app") if e.workflow and e.phase == "after"]
    assert steps == group_step_names(config)
    assert steps[:3] == ["claim-members", "check-replication:data", "check-replication:logs"]
    # Each member's own record ended with the group's, with its own part of the data.
    for name in MEMBERS:
        own = store.last_workflow(name)
        assert own is not None and (own.kind, own.status) == ("failover", "done")
        assert own.data["group"] == "app" and own.data["storage_fence"] == "fenced"
    shown = {s.name: s for s in ctl.status()}
    assert {n: (s.group, s.state.value) for n, s in shown.items()} == {
        "data": ("app", "failed-over"),
        "logs": ("app", "failed-over"),
    }
    # A member's history comes with its group's workflow.
    history = ctl.history("logs", 0, 1000)
    assert {e.volume for e in history} == {"logs", "app"}
    assert "break:logs" in {e.step for e in history}
    metrics = {m.volume: m.failovers_total for m in ctl.metrics_state()}
    assert metrics == {"data": 1, "logs": 1}


def test_a_member_whose_guardrail_fails_refuses_the_group_before_any_break(
    config: Config, store: SqliteStore, servers: dict[str, ContractServer]
) -> None:
    servers["logs"].model.healthy = False
    servers["logs"].model.error_message = "transfer failed: peer not reachable"
    ctl = controller(config, store, servers)

    async def main() -> str:
        try:
            with pytest.raises(NfsFailoverError) as refused:
                await ctl.request("failover", "app")
            return str(refused.value)
        finally:
            await ctl.close()

    refusal = asyncio.run(main())

    assert refusal == (
        "failover of group app: volume logs: no failover: replication is unhealthy:"
        " transfer failed: peer not reachable"
    )
    assert breaks(servers) == {"data": 0, "logs": 0}
    assert store.get_desired("data") is None and store.get_desired("logs") is None
    last = store.last_workflow("app")
    assert last is not None and last.status == "refused"
    (after,) = [e for e in store.events("app") if e.detail.get("refused")]
    assert after.step == "check-replication:logs"
    for name in MEMBERS:  # the holds are given back: each member may act again
        assert store.running_workflow(name) is None
        own = store.last_workflow(name)
        assert own is not None and own.status == "refused"


def test_a_break_that_fails_midway_stops_the_group_and_the_next_cycle_finishes_every_member(
    config: Config, store: SqliteStore, servers: dict[str, ContractServer]
) -> None:
    servers["logs"].fail_next_operation("breakReplication", "ReplicationBreakFailed", "peer down")
    ctl = controller(config, store, servers)
    names = group_step_names(config)

    async def main() -> tuple[str, dict[str, object]]:
        try:
            with pytest.raises(NfsFailoverError) as stopped:
                await ctl.request("failover", "app")
            between = {
                "breaks": breaks(servers),
                "running": store.running_workflow("app"),
                "states": {s.name: s.state.value for s in ctl.status()},
            }
            # The members are held: neither can start a workflow of its own meanwhile.
            with pytest.raises(StoreError):
                store.start_workflow("data", "failover", {})
            with pytest.raises(NfsFailoverError, match="group app: a workflow is already running"):
                await ctl.request("failover", "logs")
            decisions = await ctl.cycle()  # the next cycle resumes it
            await ctl.settle(WAIT)
            between["decision"] = str(decisions["app"])
            return str(stopped.value), between
        finally:
            await ctl.close()

    stopped, between = asyncio.run(main())

    assert stopped.startswith("failover of group app: stopped; it resumes on the next cycle")
    assert between["breaks"] == {"data": 1, "logs": 1}  # data broken, logs' break failed
    running = between["running"]
    assert running is not None and names[running.step] == "break:logs"  # type: ignore[attr-defined]
    assert between["states"] == {"data": "failing-over", "logs": "failing-over"}
    assert str(between["decision"]).startswith(
        f"resume: resuming failover of group app at step {names.index('break:logs')} (break:logs)"
    )
    # All or nothing: every member failed over, each broken once.
    assert breaks(servers) == {"data": 1, "logs": 2}
    assert servers["data"].model.mirror_state == servers["logs"].model.mirror_state == "Broken"
    assert failed_over(store, "data") and failed_over(store, "logs")
    done = store.last_workflow("app")
    assert done is not None and (done.id, done.status) == (running.id, "done")  # type: ignore[attr-defined]
    assert store.count_events("app", "break:data", "after") == 1
    assert store.count_events("app", "break:logs", "before") == 2


def test_abort_of_a_member_ends_its_groups_workflow_and_refuses_past_the_break(
    config: Config, store: SqliteStore, servers: dict[str, ContractServer]
) -> None:
    servers["logs"].fail_next_operation("breakReplication", "ReplicationBreakFailed", "peer down")
    ctl = controller(config, store, servers)

    async def main() -> tuple[str, object]:
        try:
            with pytest.raises(NfsFailoverError):
                await ctl.request("failover", "app")
            with pytest.raises(NfsFailoverError) as refused:
                await ctl.request("abort", "logs")
            return str(refused.value), await ctl.request("abort", "logs", force=True)
        finally:
            await ctl.close()

    refused, aborted = asyncio.run(main())

    assert refused == (
        "group app: failover is past break:data (at break:logs); aborting it leaves the"
        " replication as that step left it: use --force to abort anyway"
    )
    assert aborted.model_dump(mode="json") == {  # type: ignore[attr-defined]
        "action": "abort",
        "volume": "logs",
        "workflow": store.last_workflow("app").id,  # type: ignore[union-attr]
        "kind": "failover",
        "at": "break:logs",
        "state": "normal",
        "group": "app",
        "states": {"data": "normal", "logs": "normal"},
    }
    for name in ("app", *MEMBERS):
        assert store.running_workflow(name) is None
        last = store.last_workflow(name)
        assert last is not None and last.status == "aborted"


def test_a_switchover_of_the_group_runs_every_step_for_each_member_in_turn(
    config: Config,
    store: SqliteStore,
    servers: dict[str, ContractServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stand_in = dict(with_stand_in())["confirm-writable"]
    steps = [
        (name, stand_in if name == "confirm-writable" else step)
        for name, step in workflows.WORKFLOWS["switchover"]
    ]
    monkeypatch.setitem(workflows.WORKFLOWS, "switchover", tuple(steps))
    ctl = controller(config, store, servers)

    async def main() -> object:
        try:
            return await ctl.request("switchover", "app")
        finally:
            await ctl.close()

    result = asyncio.run(main())

    assert (getattr(result, "group", None), getattr(result, "note", "")) == ("app", None)
    assert breaks(servers) == {"data": 1, "logs": 1}
    done = [e for e in store.events("app") if e.phase == "after"]
    assert [e.step for e in done][5:9] == [
        "withdraw-destination:data",
        "withdraw-destination:logs",
        "final-transfer:data",
        "final-transfer:logs",
    ]
    members = done[-1].detail["members"]
    assert isinstance(members, dict)
    assert str(members["logs"]["final_transfer"]).startswith("skipped: ")  # ANF has none


def test_a_paused_group_shows_each_member_paused_and_decides_nothing(
    config: Config, store: SqliteStore, servers: dict[str, ContractServer]
) -> None:
    ctl = controller(config, store, servers)

    async def main() -> dict[str, object]:
        try:
            await ctl.request("pause", "app")
            return dict(await ctl.cycle())
        finally:
            await ctl.close()

    decisions = asyncio.run(main())

    assert list(decisions) == ["app"]
    assert str(decisions["app"]).startswith("paused: no automatic action")
    assert {s.name: s.paused for s in ctl.status()} == {"data": True, "logs": True}


# -- killed at any step --------------------------------------------------------------------------

_GROUP_FAILOVER = """
import asyncio, sys
from pathlib import Path
from nfs_failover.config import load_config
from nfs_failover.controller import groups, workflows
from nfs_failover.replication.anf import AnfProvider
from nfs_failover.store import SqliteStore
from tests.controller.lease_helpers import with_stand_in
from tests.replication.anf_helpers import sdk_client
config = load_config(sys.argv[1])
urls = dict(zip(("data", "logs"), sys.argv[2:4]))
workflows.WORKFLOWS["failover"] = with_stand_in()
store = SqliteStore(config.store.sqlite_path)
members = {
    v.name: workflows.Context(config, v, AnfProvider(
        v, client=sdk_client(urls[v.name], Path(sys.argv[4])), polling_interval=0), store,
        step_timeout=30)
    for v in config.volumes
}
ctx = groups.GroupContext(config, config.group("app"), members, store)
asyncio.run(groups.run_group(ctx, "failover"))
"""


@pytest.mark.parametrize("crash_at", range(1 + 2 * len(workflows.WORKFLOWS["failover"])))
def test_a_group_failover_killed_at_any_step_resumes_and_breaks_every_member_once(
    config: Config, store: SqliteStore, servers: dict[str, ContractServer], crash_at: int
) -> None:
    assert config.source is not None
    urls = [servers[name].url for name in MEMBERS]
    killed = subprocess.run(  # from the checkout, where the child imports tests.*
        [sys.executable, "-c", _GROUP_FAILOVER, config.source, *urls, str(servers["data"].ca_path)],
        cwd=REPO,
        env={**os.environ, workflows.CRASH_ENV: f"group-failover:{crash_at}"},
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert killed.returncode == workflows.CRASH_EXIT, killed.stderr

    running = store.running_workflow("app")  # the restarted controller finds it at its step
    assert running is not None and running.step == crash_at
    members = {
        name: workflows.Context(config, config.volume(name), provider, store, step_timeout=WAIT)
        for name, provider in providers(config, servers).items()
    }
    ctx = groups.GroupContext(config, config.group("app"), members, store)
    asyncio.run(groups.run_group(ctx, "failover", resume=running))

    assert breaks(servers) == {"data": 1, "logs": 1}
    assert failed_over(store, "data") and failed_over(store, "logs")
    done = store.last_workflow("app")
    assert done is not None and (done.id, done.status) == (running.id, "done")
    for name in MEMBERS:
        assert store.running_workflow(name) is None
        # Never two writable replicas offered: the destination is withdrawn before its break.
        first_break = min(
            e.id for e in store.events("app") if (e.step, e.phase) == (f"break:{name}", "before")
        )
        desired = [e for e in store.events(name) if e.kind == "desired"]
        both = [e.id for e in desired if len(e.detail["offered"]) == 2]  # type: ignore[arg-type]
        assert all(event < first_break for event in both)
