"""The storage fence, seen by a client nobody enrolled: a client host mounts the old
source by hand with the kernel NFS client (`mount -t nfs`, no map, no agent) once zone 1
is back after a failover. Its write fails with "Read-only file system" and nothing lands
on the old source; after the failback the same mount takes writes again."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

from nfs_failover import ganesha
from nfs_failover.config import Volume, load_config
from nfs_failover.controller import fence
from nfs_failover.controller.workflows import Context, run
from nfs_failover.lab import Lab
from nfs_failover.lab.clients import ClientHost, ExecResult, check, exec_sync
from nfs_failover.replication.local import LocalProvider
from nfs_failover.store import SqliteStore

pytestmark = pytest.mark.lab

T = 60.0
MOUNT = PurePosixPath("/tmp/unmanaged")  # the guest's /tmp is its own


def write(client: ClientHost, name: str) -> ExecResult:
    """A write as an application makes it, through the hand-typed mount."""
    script = f"echo by-hand > {MOUNT / name}"
    return exec_sync(client, ["sh", "-c", script], timeout=30.0)


@pytest.fixture
def volume(lab: Lab, tmp_path: Path) -> Iterator[Volume]:
    """The lab's volume with a relationship state of its own, left with the normal
    access (site1 takes writes, dest1 not) whatever happened."""
    base = load_config(lab.config_path).volumes[0]
    settings = base.replication.model_copy(update={"state_dir": tmp_path / "relationship"})
    yield base.model_copy(update={"replication": settings})
    for zone, read_only in zip(lab.zones, (False, True), strict=True):
        if ganesha.set_access(zone.conf, zone.folder, read_only=read_only):
            ganesha.reload(zone.pidfile)


def test_a_hand_mounted_old_source_refuses_writes_until_the_failback(
    lab: Lab, volume: Volume, tmp_path: Path
) -> None:
    config = load_config(lab.config_path).model_copy(update={"volumes": (volume,)})
    provider = LocalProvider(volume)
    store = SqliteStore(tmp_path / "state.db")
    client = lab.running_clients()[0]
    source = lab.zones[0]
    check(exec_sync(client, ["mkdir", "-p", str(MOUNT)], timeout=10.0))
    mounted = False
    try:
        asyncio.run(provider.transfer_now(timeout=T))
        lab.outage("az1")
        try:
            asyncio.run(run(Context(config, volume, provider, store, step_timeout=T), "failover"))
            pending = fence.latest(store, volume.name)
            # Not taken yet: wanted, or saved and changed but not confirmed (no answer).
            assert pending is not None
            assert pending.state in (fence.FenceState.PENDING, fence.FenceState.FENCING)
        finally:
            lab.restore("az1")

        async def retried() -> None:  # the controller loop's try, once site1 answers
            retrier = fence.Retrier(store)
            retrier.poke(volume.name, provider)
            await retrier.settle()

        asyncio.run(retried())
        fenced = fence.latest(store, volume.name)
        assert fenced is not None and fenced.state is fence.FenceState.FENCED

        options = "vers=3,nolock,soft,timeo=20,retrans=2"
        check(
            exec_sync(
                client,
                ["mount", "-t", "nfs", "-o", options, source.export, str(MOUNT)],
                timeout=60.0,
            )
        )
        mounted = True
        refused = write(client, "while-fenced")
        assert not refused.ok
        assert "Read-only file system" in refused.why(), refused.why()
        assert not (source.folder / "while-fenced").exists()

        asyncio.run(run(Context(config, volume, provider, store, step_timeout=T), "failback"))
        lifted = fence.latest(store, volume.name)
        assert lifted is not None and lifted.state is fence.FenceState.UNFENCED
        taken = write(client, "after-failback")
        assert taken.ok, taken.why()
        assert (source.folder / "after-failback").read_text() == "by-hand\n"
    finally:
        if mounted:
            exec_sync(client, ["umount", "-f", str(MOUNT)], timeout=30.0)
        lab.restore("az1")
        asyncio.run(provider.close())
        store.close()
        (source.folder / "after-failback").unlink(missing_ok=True)
