"""Two controllers on two hosts of the lab (the host itself and a controller host, a
namespace on the client network), one etcd cluster with a member cut off, and the agents
inside the client hosts: the leader is killed with SIGKILL in the middle of a failover,
and the other one takes the lease once it expires, resumes the journaled workflow at the
step it had reached, breaks replication once, and every client's map ends on zone 2; the
failback brings the maps back. The agents' own cycle is ten minutes away: only the
store's watch can move their maps in time (``bench/client_watch.py`` times it)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from nfs_failover import ganesha
from nfs_failover.config import load_config
from nfs_failover.lab import Lab, etcd, guest_agent
from nfs_failover.lab import controller_host as hosts
from nfs_failover.replication.local import LocalProvider
from nfs_failover.steering.autofs_files import render
from nfs_failover.store import Store, StoreError, open_store
from tests.helpers import CLI, free_port

pytestmark = pytest.mark.lab

AGENT_CYCLE = timedelta(minutes=10)  # the agents follow the watch alone
VOLUME = "crr"
# The hook that holds the first leader in the failover's pre-hooks step while the file
# named by its first argument exists; it says it started by creating the second.
HOLD = """\
import pathlib, sys, time
pathlib.Path(sys.argv[2]).write_text("entered")
deadline = time.monotonic() + 300
while pathlib.Path(sys.argv[1]).exists() and time.monotonic() < deadline:
    time.sleep(0.05)
"""


def wait_for(check: Callable[[], object], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except StoreError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g}s: {what}")
        time.sleep(0.1)


def controller_config(lab: Lab, tmp_path: Path, name: str, prefix: str) -> Path:
    """The lab's config as controller ``name`` runs it: the lab's etcd under ``prefix``, a
    fresh relationship state, a probe every 0.5 s and a grace of 3 s (a lease of 5 s), the
    holding hook, and an API of its own."""
    data: dict[str, Any] = yaml.safe_load(lab.config_path.read_text())
    data["store"] = etcd.endpoints(lab.running_etcd())
    data["etcd"] = {"prefix": prefix}
    data["volumes"][0]["replication"]["state_dir"] = str(tmp_path / "relationship")
    data["policy"].update(
        probe_interval="0.5s", probe_timeout="0.5s", failover_after="3s", recover_after="2s"
    )
    hook = [sys.executable, str(tmp_path / "hold.py"), str(tmp_path / "hold")]
    data["hooks"] = {"pre_failover": [{"argv": [*hook, str(tmp_path / f"entered-{name}")]}]}
    data["api"].update(listen=f"127.0.0.1:{free_port()}", socket=str(tmp_path / f"{name}.sock"))
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    path.chmod(0o600)
    return path


def status(config: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        [*CLI, "status", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    answer: list[dict[str, Any]] = json.loads(done.stdout)
    return answer


def decided(config: Path) -> bool:
    """Whether the controller of ``config`` answers and has made a decision."""
    try:
        return bool(status(config)[0]["decision"])
    except subprocess.CalledProcessError:  # not listening yet
        return False


def steps(store: Store, workflow: int) -> list[tuple[str, str]]:
    return [(e.step, e.phase) for e in store.events(VOLUME) if e.workflow == workflow]


@pytest.fixture
def normal_access(lab: Lab) -> Iterator[None]:
    """The lab's volume left as the other tests expect it: site1 takes writes, dest1 not."""
    yield
    for zone, read_only in zip(lab.zones, (False, True), strict=True):
        if ganesha.set_access(zone.conf, zone.folder, read_only=read_only):
            ganesha.reload(zone.pidfile)


def test_the_standby_on_another_host_finishes_the_failover_its_leader_died_in(
    lab: Lab, tmp_path: Path, normal_access: None
) -> None:
    (tmp_path / "hold.py").write_text(HOLD)
    prefix = f"/nfs-failover-test-{uuid.uuid4().hex[:8]}/"
    configs = {name: controller_config(lab, tmp_path, name, prefix) for name in ("ctl0", "ctl1")}
    config = load_config(configs["ctl0"])
    volume = config.volumes[0]
    store = open_store(config.store, etcd=config.etcd)
    other = lab.controller_host("ctl1")
    agents = [
        guest_agent.start(lab, client, interval=AGENT_CYCLE, prefix=prefix)
        for client in lab.running_clients()
    ]
    engine = LocalProvider(volume)  # the baseline: a failover needs a mirrored pair
    asyncio.run(engine.transfer_now(timeout=120.0))
    asyncio.run(engine.close())
    processes: list[subprocess.Popen[bytes]] = []
    assert lab.outage("etcd1")  # the first member each of them lists: the others serve
    try:
        first = subprocess.Popen(
            [*CLI, "controller", "--config", str(configs["ctl0"])],
            stdout=(tmp_path / "ctl0.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        processes.append(first)
        wait_for(lambda: store.lease_holder("controller"), 60, "a leader")
        leader = store.lease_holder("controller")
        second = hosts.spawn(
            other, [*CLI, "controller", "--config", str(configs["ctl1"])], log=tmp_path / "ctl1.log"
        )
        processes.append(second)
        wait_for(lambda: decided(configs["ctl1"]), 60, "the standby's first cycle")
        assert status(configs["ctl1"])[0]["leader"] == leader
        guest_agent.wait_reporting(store, VOLUME, agents, timeout=300.0)

        (tmp_path / "hold").write_text("")
        assert lab.outage("az1")
        entered = wait_for(
            lambda: next(tmp_path.glob("entered-*"), None), 60, "the leader in its pre-hooks"
        )
        dying = first if entered.name == "entered-ctl0" else second
        survivor_config = configs["ctl1" if dying is first else "ctl0"]
        workflow = wait_for(lambda: store.running_workflow(VOLUME), 10, "a running failover")
        assert workflow.kind == "failover"
        dying.send_signal(signal.SIGKILL)
        dying.wait(timeout=10)
        (tmp_path / "hold").unlink()  # the killed leader's hook ends; the next one passes

        wait_for(lambda: (w := store.last_workflow(VOLUME)) and w.status == "done", 60, "done")
        finished = store.last_workflow(VOLUME)
        assert finished is not None and finished.id == workflow.id  # resumed, not restarted
        journal = steps(store, workflow.id)
        assert journal.count(("check-replication", "before")) == 1  # not done again
        assert journal.count(("pre-hooks", "before")) == 2  # interrupted, then resumed
        assert journal.count(("break", "before")) == 1
        breaks = [e for e in store.events(VOLUME) if e.step == "break" and e.phase == "after"]
        assert [e.detail.get("break_changed") for e in breaks] == [True]

        desired = store.get_desired(VOLUME)
        assert desired is not None and desired.active == "dest1" and desired.fenced == ("site1",)
        texts = {a.name: render(a.config, {VOLUME: desired}).map_text for a in agents}
        guest_agent.wait_for_maps(agents, texts, timeout=60.0)
        shown = status(survivor_config)[0]
        assert (shown["state"], shown["active"]) == ("failed-over", "dest1")
        assert shown["leader"] != leader

        assert lab.restore("az1")
        done = subprocess.run(
            [*CLI, "failback", VOLUME, "--config", str(survivor_config)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert status(survivor_config)[0]["state"] == "normal"
        back = store.get_desired(VOLUME)
        assert back is not None and back.active == "site1" and not back.fenced
        texts = {a.name: render(a.config, {VOLUME: back}).map_text for a in agents}
        guest_agent.wait_for_maps(agents, texts, timeout=60.0)  # the watch brings them back
        assert all(guest_agent.running(a) for a in agents)
    finally:
        lab.restore("az1")
        lab.restore("etcd1")
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        for agent in agents:
            guest_agent.stop(agent)
        store.close()
        hosts.remove(other)
    for log in [*(tmp_path / f"{name}.log" for name in configs), *(a.log for a in agents)]:
        text = log.read_text()
        assert "Traceback" not in text, text
