"""Client hosts: a real Debian kernel, the real automount and the kernel NFS client.

The session's lab boots one client host (tests/conftest.py); these tests run in it what a
user's NFS client does: automount lookups, writes through ``/misc/crr``, a hard mount
that hangs on a dead zone, and the agent healing it.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import pytest

from nfs_failover import ganesha
from nfs_failover.agent import Agent, Cycle
from nfs_failover.config import Config, Mode, load_config
from nfs_failover.desired import failed_over
from nfs_failover.lab import Lab, clients, guest_server
from nfs_failover.lab.automount import RELOADED, GuestAutomount, mounts_tried
from nfs_failover.lab.clients import ClientHost, ExecResult, exec_sync
from nfs_failover.lab.guest_machine import GuestMachine, client_config
from nfs_failover.lab.lab import STATE_DIR_ENV
from nfs_failover.steering.healing import HealOutcome
from nfs_failover.steering.verdicts import Verdict
from nfs_failover.store import SqliteStore
from tests.helpers import CLI

pytestmark = pytest.mark.lab

KEY = PurePosixPath("/misc/crr")


@pytest.fixture
def client(lab: Lab) -> Iterator[ClientHost]:
    """client1, with no managed files and nothing mounted at /misc/crr before and after."""
    host = lab.client("client1")
    daemon = GuestAutomount(host)
    for path in host.files_root.rglob("*"):
        if path.is_file():
            path.unlink()
    daemon.unmount(KEY)
    try:
        yield host
    finally:
        for zone in lab.zones:
            lab.restore(zone.name)
        daemon.unmount(KEY)


def agent_config(lab: Lab, *, mode: Mode) -> Config:
    config = client_config(load_config(lab.config_path))
    volume = config.volumes[0].model_copy(update={"mode": mode})
    return config.model_copy(update={"volumes": (volume,)})


def exec_in_background(client: ClientHost, argv: list[str]) -> Future[ExecResult]:
    """``argv`` in the guest from a worker thread (the guest kills it after 60 s)."""
    return ThreadPoolExecutor(max_workers=1).submit(exec_sync, client, argv, timeout=60)


def run_cycles(agent: Agent, count: int = 1) -> list[Cycle]:
    async def cycles() -> list[Cycle]:
        try:
            return [await agent.cycle() for _ in range(count)]
        finally:
            await agent.close()

    return asyncio.run(cycles())


def test_status_lists_the_client_host_with_its_kernel(lab: Lab) -> None:
    (status,) = [c for c in lab.status().clients if c.name == "client1"]
    assert status.state == "up"
    assert status.kernel == clients.find_kernel().release
    assert status.address == lab.client("client1").address
    assert status.boot_seconds is not None and status.boot_seconds > 0


def test_exec_returns_output_and_status_and_kills_a_command_at_its_deadline(lab: Lab) -> None:
    host = lab.client("client1")
    done = exec_sync(host, ["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=10)
    assert (done.returncode, done.stdout, done.stderr) == (3, b"out\n", b"err\n")
    started = time.monotonic()
    slow = exec_sync(host, ["sleep", "60"], timeout=1)
    assert slow.timed_out and slow.returncode is None
    assert time.monotonic() - started < 10
    assert exec_sync(host, ["true"], timeout=10).ok  # the server carries on


def test_a_large_output_comes_back_bounded(lab: Lab) -> None:
    host = lab.client("client1")
    big = exec_sync(host, ["head", "-c", str(6 << 20), "/dev/zero"], timeout=30)
    assert big.ok and len(big.stdout) == guest_server.MAX_OUTPUT  # kept, the rest dropped


def test_a_wrong_token_is_refused(lab: Lab, tmp_path: Path) -> None:
    host = lab.client("client1")
    forged = tmp_path / "token"
    forged.write_text("0" * 64 + "\n")
    impostor = ClientHost(host.name, host.index, host.address, host.gateway, host.tap, tmp_path)
    with pytest.raises(clients.LabError, match="authentication failed"):
        exec_sync(impostor, ["true"], timeout=5)


def test_automount_mounts_the_source_then_follows_a_failover_and_never_mounts_the_fenced(
    lab: Lab, client: ClientHost, tmp_path: Path
) -> None:
    config = agent_config(lab, mode=Mode.READ_ONLY)
    volume = config.volumes[0]
    site1, dest1 = (str(r.export) for r in volume.replicas)
    store = SqliteStore(tmp_path / "state.db")
    daemon = GuestAutomount(client)
    run_cycles(Agent(config, store, name=client.name, machine=GuestMachine(client)))
    daemon.wait_mounted_root(KEY.parent)
    # Both replicas offered, the source weighted first: 5 of 5 fresh lookups mount it.
    assert [daemon.replica_for(KEY) for _ in range(5)] == [site1] * 5

    daemon.access(KEY)  # a live mount of site1, which the failover must move
    assert daemon.mounted(KEY) == site1
    store.set_desired(failed_over(volume, generation=1), expected_generation=None)
    before = len(daemon.text())
    (cycle,) = run_cycles(Agent(config, store, name=client.name, machine=GuestMachine(client)))
    daemon.wait_for(RELOADED, after=before)
    (heal,) = cycle.heals
    assert (heal.verdict, heal.outcome) == (Verdict.WRONG_REPLICA, HealOutcome.UNMOUNTED)
    after = len(daemon.text())
    assert [daemon.replica_for(KEY) for _ in range(3)] == [dest1] * 3
    assert all(tried == dest1 for tried in mounts_tried(daemon.text()[after:]))


def test_a_file_written_through_misc_crr_lands_in_zone_1(
    lab: Lab, client: ClientHost, tmp_path: Path
) -> None:
    config = agent_config(lab, mode=Mode.READ_WRITE)
    store = SqliteStore(tmp_path / "state.db")
    run_cycles(Agent(config, store, name=client.name, machine=GuestMachine(client)))
    GuestAutomount(client).wait_mounted_root(KEY.parent)
    name = f"written-by-{client.name}-{time.time_ns()}"
    wrote = exec_sync(
        client,
        ["sh", "-c", 'echo "through the kernel client" > "$1"', "sh", str(KEY / name)],
        timeout=60,
    )
    assert wrote.ok, wrote.why()
    source = lab.zone("az1")
    assert (source.folder / name).read_text() == "through the kernel client\n"
    (source.folder / name).unlink()


def test_an_outage_hangs_the_hard_mount_and_the_agent_heals_it_once_steered_away(
    lab: Lab, client: ClientHost, tmp_path: Path
) -> None:
    """A hung mount of the map's first choice waits (a new mount would go to the same dead
    server); once the desired state moves the clients, the agent forces the unmount: the
    process stuck on the dead zone gets an error at once, and the next access mounts
    zone 2."""
    config = agent_config(lab, mode=Mode.READ_WRITE)
    crr = config.volumes[0]
    dest1 = str(crr.replicas[1].export)
    store = SqliteStore(tmp_path / "state.db")
    daemon = GuestAutomount(client)
    agent = Agent(config, store, name=client.name, machine=GuestMachine(client))
    run_cycles(agent)
    daemon.wait_mounted_root(KEY.parent)
    assert daemon.access(KEY).ok
    lab.outage("az1")
    hung = exec_sync(client, ["stat", "-f", str(KEY)], timeout=3)
    assert hung.timed_out  # a hard mount of a dead zone does not answer
    # A writer stuck on the dead zone: its fsync never returns on its own.
    stuck = exec_in_background(
        client, ["dd", "if=/dev/zero", f"of={KEY}/stuck", "bs=4k", "count=1", "conv=fsync"]
    )

    agent = Agent(config, store, name=client.name, machine=GuestMachine(client))
    timeout = agent.timeout.total_seconds()
    started = time.monotonic()
    (cycle,) = run_cycles(agent)
    (heal,) = cycle.heals
    assert heal.verdict is Verdict.HUNG, heal.reason
    assert heal.outcome is HealOutcome.NOTHING, heal.reason
    assert "site1 is the map's first choice" in heal.reason
    # The check gave up at its deadline; the rest of the cycle is the probes of the cut
    # zone (the same deadline) and a few commands in the guest.
    assert time.monotonic() - started < 2 * timeout + 10

    assert store.set_desired(failed_over(crr, generation=1), expected_generation=None)
    # What a workflow's change of the desired state runs at once, with no cycle: the maps
    # and, since they changed, the unmount of the mount they no longer allow.
    steered = asyncio.run(agent.steer())
    assert steered.applied is not None and steered.applied.changed, steered
    assert not steered.probes
    (heal,) = steered.heals
    assert heal.verdict is Verdict.WRONG_REPLICA, heal.reason
    assert heal.outcome is HealOutcome.UNMOUNTED, heal.reason
    assert heal.reason.startswith("unmounted (forced, lazily) /misc/crr: mounted from site1")
    # The forced unmount aborted what waited on the dead zone: the writer ended, with an
    # error (its write was never acknowledged).
    ended = stuck.result(timeout=30)
    assert not ended.timed_out and ended.returncode != 0, ended
    assert daemon.access(KEY).ok  # the next access mounts the other replica
    assert daemon.mounted(KEY) == dest1


def test_the_seeds_own_setup_mounts_the_stale_source_again_after_it_returns(
    lab: Lab, client: ClientHost
) -> None:
    """The seed's plain map, replayed: with zone 1 cut off a fresh lookup pays autofs's
    probe timeouts before it mounts zone 2; there a write fails until the break; and once
    zone 1 is back, autofs remounts it, and the file written on zone 2 is gone from view."""
    site1, dest1 = (z.export for z in lab.zones)
    root = client.files_root
    (root / "etc/auto.master.d").mkdir(parents=True, exist_ok=True)
    master = root / "etc/auto.master.d/nfs-failover.autofs"
    master.write_text("/misc /etc/auto.nfs-failover --timeout 10\n")
    (root / "etc/auto.nfs-failover").write_text(
        f"crr -fstype=nfs,rw,nosuid,hard,tcp,timeo=60,vers=3,nolock {site1} {dest1}\n"
    )
    daemon = GuestAutomount(client)
    daemon.reload()
    daemon.wait_mounted_root(KEY.parent)
    destination = lab.zone("az2")
    lab.outage("az1")
    started = time.monotonic()
    assert daemon.access(KEY).ok
    lookup = time.monotonic() - started
    assert daemon.mounted(KEY) == dest1
    assert lookup > 5, f"a fresh lookup with zone 1 cut off took only {lookup:.1f}s"
    name = f"seed-{time.time_ns()}"
    write = ["sh", "-c", 'echo written on zone 2 > "$1"', "sh", str(KEY / name)]
    refused = exec_sync(client, write, timeout=30)
    assert not refused.ok and b"Read-only file system" in refused.stderr
    try:
        ganesha.set_access(destination.conf, destination.folder, read_only=False)  # "break"
        ganesha.reload(destination.pidfile)
        assert _eventually(lambda: exec_sync(client, write, timeout=30).ok)
        lab.restore("az1")
        # Each idle mount expires (as --timeout 10 would) and the next access looks up
        # afresh: autofs goes back to the stale source on its own, by ping time.
        listing = None
        for _ in range(10):
            daemon.unmount(KEY)
            seen = daemon.access(KEY)
            if daemon.mounted(KEY) == site1:
                listing = seen.text().split()
                break
        assert listing is not None, "autofs never went back to zone 1 in 10 lookups"
        assert name not in listing  # the write on zone 2 "vanished"
    finally:
        ganesha.set_access(destination.conf, destination.folder, read_only=True)
        ganesha.reload(destination.pidfile)
        (destination.folder / name).unlink(missing_ok=True)


def _eventually(check: object, tries: int = 20) -> bool:
    assert callable(check)
    for _ in range(tries):
        if check():
            return True
        time.sleep(0.25)
    return False


def test_the_agent_command_steers_a_client_host(lab: Lab, client: ClientHost) -> None:
    daemon = GuestAutomount(client)
    before = len(daemon.text())
    done = subprocess.run(
        [
            *CLI,
            "agent",
            "--config",
            str(lab.config_path),
            "--lab-client",
            client.name,
            "--once",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, STATE_DIR_ENV: str(lab.state_dir)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "wrote /etc/auto.nfs-failover" in done.stdout
    assert f"in {client.name}" in done.stderr  # the reload went to the client host
    daemon.wait_for(RELOADED, after=before)
    assert lab.zones[0].address in (client.files_root / "etc/auto.nfs-failover").read_text()


def test_an_agent_for_a_client_host_that_is_not_running_says_so(lab: Lab) -> None:
    done = subprocess.run(
        [
            *CLI,
            "agent",
            "--config",
            str(lab.config_path),
            "--lab-client",
            "client8",
            "--once",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, STATE_DIR_ENV: str(lab.state_dir)},
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "nfs-failover: client host client8 is not running (nfs-failover lab up --clients N)"
    ]


def test_a_guest_reaches_the_zones_and_nothing_else(lab: Lab) -> None:
    host = lab.client("client1")
    connect = 'exec 3<>"/dev/tcp/$1/2049"'  # bash: a TCP connection, then closed
    assert exec_sync(host, ["bash", "-c", connect, "bash", lab.zones[1].address], timeout=10).ok

    def dropped() -> int:
        rules = subprocess.run(
            ["nft", "list", "table", "inet", lab.forward_table],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return sum(int(n) for n in re.findall(r"counter packets (\d+)", rules))

    before = dropped()
    # 198.18.255.254 is in the lab's range but held by no lab namespace: the host must
    # drop the packet rather than route it out of the machine.
    send = 'echo probe > "/dev/udp/$1/9"'  # bash: one UDP datagram
    assert exec_sync(host, ["bash", "-c", send, "bash", "198.18.255.254"], timeout=10).ok
    assert dropped() == before + 1
