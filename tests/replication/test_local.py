"""The embedded engine on the real lab: data really moves between two Ganesha zones."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from nfs_failover.config import Volume
from nfs_failover.errors import PreconditionError, ProtocolStatusError, ProviderError
from nfs_failover.lab import Lab
from nfs_failover.pacing import Deadline, Pacer
from nfs_failover.replication import MirrorState, OperationResult, Progress, RelationshipStatus
from nfs_failover.replication.local import LocalProvider
from tests.helpers import CLI, PYTHON
from tests.replication.helpers import T, folders, nfs_write, settle, tree

pytestmark = pytest.mark.lab


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Return once ``check()`` holds, looking every 0.05 s; fail, naming ``what``, at the
    deadline."""
    pacer = Pacer.every(0.05, Deadline(timeout))
    while not await check():
        if not await pacer.pause():
            raise AssertionError(f"not within {timeout}s: {what}")


def test_baseline_then_incremental_carries_creates_changes_renames_and_deletes(
    provider: LocalProvider, volume: Volume
) -> None:
    source, destination = folders(volume)
    (source / "keep.txt").write_text("kept")
    (source / "change.txt").write_text("before")
    (source / "old-name.txt").write_text("renamed")
    (source / "gone.txt").write_text("deleted")
    (source / "sub").mkdir()
    (source / "sub" / "deep.bin").write_bytes(os.urandom(50_000))
    baseline = asyncio.run(provider.transfer_now(timeout=T))
    assert baseline.status.mirror_state is MirrorState.MIRRORED
    assert tree(destination) == tree(source)

    (source / "change.txt").write_text("after, and longer")
    (source / "old-name.txt").rename(source / "new-name.txt")
    (source / "gone.txt").unlink()
    (source / "sub" / "new.txt").write_text("created")
    incremental = asyncio.run(provider.transfer_now(timeout=T))
    assert tree(destination) == tree(source)
    assert incremental.bytes_transferred is not None and incremental.bytes_transferred > 0
    assert not (destination / "gone.txt").exists()


def test_destination_refuses_writes_while_mirrored_and_takes_them_after_break(
    provider: LocalProvider, volume: Volume
) -> None:
    destination = volume.replicas[1].export
    asyncio.run(provider.transfer_now(timeout=T))
    with pytest.raises(ProtocolStatusError) as refused:
        asyncio.run(nfs_write(destination, "refused"))
    assert refused.value.name == "NFS3ERR_ROFS"

    broken = asyncio.run(provider.break_(timeout=T))
    assert (broken.changed, broken.status.mirror_state) == (True, MirrorState.BROKEN)
    asyncio.run(nfs_write(destination, "taken"))
    assert (folders(volume)[1] / "taken").read_bytes() == b"written over NFS"
    again = asyncio.run(provider.break_(timeout=T))
    assert again.changed is False


def test_break_needs_an_initialized_relationship(provider: LocalProvider) -> None:
    with pytest.raises(PreconditionError, match="uninitialized"):
        asyncio.run(provider.break_(timeout=T))


def test_divergence_lists_exactly_the_files_written_on_each_side_after_the_transfer(
    provider: LocalProvider, volume: Volume
) -> None:
    source, destination = folders(volume)
    for name in ("a", "b", "c"):
        (source / name).write_text(name)
    settle()  # a file changed right at a transfer's start counts as changed after it
    asyncio.run(provider.transfer_now(timeout=T))
    asyncio.run(provider.break_(timeout=T))
    settle()
    (source / "a").write_text("changed on the source")
    (source / "new-on-source").write_text("x")
    (destination / "b").write_text("changed on the destination")
    (destination / "c").unlink()
    divergence = asyncio.run(provider.divergence(timeout=T))
    assert divergence.source_only == ("a", "new-on-source")
    assert divergence.destination_only == ("b", "c")


def test_resync_overwrites_the_destination_and_reports_what_it_overwrote(
    provider: LocalProvider, volume: Volume
) -> None:
    source, destination = folders(volume)
    (source / "data").write_text("source truth")
    asyncio.run(provider.transfer_now(timeout=T))
    asyncio.run(provider.break_(timeout=T))
    settle()
    (destination / "data").write_text("written during the break")
    (destination / "extra").write_text("only on the destination")
    result = asyncio.run(provider.resync(timeout=T))
    assert result.overwritten == ("data", "extra")
    assert tree(destination) == tree(source) == {"data": b"source truth"}
    assert (result.status.source, result.status.mirror_state) == ("site1", MirrorState.MIRRORED)
    assert asyncio.run(provider.resync(timeout=T)).changed is False


def test_reverse_resync_swaps_the_roles_and_makes_the_old_source_read_only(
    provider: LocalProvider, volume: Volume
) -> None:
    source, destination = folders(volume)
    (source / "data").write_text("v1")
    settle()
    asyncio.run(provider.transfer_now(timeout=T))
    asyncio.run(provider.break_(timeout=T))
    settle()
    (destination / "data").write_text("v2 written on the destination after failover")
    (source / "late").write_text("reached only the old source")
    result = asyncio.run(provider.reverse_resync(timeout=T))
    assert result.overwritten == ("late",)
    assert (result.status.source, result.status.destination) == ("dest1", "site1")
    assert tree(source) == tree(destination)
    assert (source / "data").read_text() == "v2 written on the destination after failover"
    with pytest.raises(ProtocolStatusError, match="NFS3ERR_ROFS"):
        asyncio.run(nfs_write(volume.replicas[0].export, "refused"))
    assert asyncio.run(provider.reverse_resync(timeout=T)).changed is False


def test_lag_grows_between_transfers_and_drops_after_one(provider: LocalProvider) -> None:
    asyncio.run(provider.transfer_now(timeout=T))
    first = asyncio.run(provider.status(timeout=T)).lag
    time.sleep(0.3)
    grown = asyncio.run(provider.status(timeout=T)).lag
    asyncio.run(provider.transfer_now(timeout=T))
    dropped = asyncio.run(provider.status(timeout=T)).lag
    assert first is not None and grown is not None and dropped is not None
    assert grown.total_seconds() >= first.total_seconds() + 0.3
    assert dropped < grown


def test_state_survives_a_restart_of_the_process(volume: Volume) -> None:
    first = LocalProvider(volume)
    asyncio.run(first.transfer_now(timeout=T))
    asyncio.run(first.break_(timeout=T))
    asyncio.run(first.close())
    second = LocalProvider(volume)
    status = asyncio.run(second.status(timeout=T))
    asyncio.run(second.close())
    assert status.mirror_state is MirrorState.BROKEN
    assert status.last_transfer_end is not None


_TRANSFER = """
import asyncio, sys
from nfs_failover.config import load_config
from nfs_failover.replication.local import LocalProvider
volume = load_config(sys.argv[1]).volumes[0]
from datetime import timedelta
from pathlib import Path
settings = volume.replication.model_copy(update={"state_dir": Path(sys.argv[2])})
engine = LocalProvider(volume.model_copy(update={"replication": settings}))
asyncio.run(engine.transfer_now(timeout=120))
"""


def test_a_transfer_killed_half_way_is_unhealthy_and_the_next_one_completes_it(
    provider: LocalProvider, volume: Volume, replication_lab: Lab
) -> None:
    source, destination = folders(volume)
    for i in range(400):
        (source / f"f{i:03}").write_bytes(os.urandom(256 * 1024))
    state_dir = volume.replication.state_dir  # type: ignore[union-attr]
    crashing = subprocess.Popen(
        [*PYTHON, "-c", _TRANSFER, str(replication_lab.config_path), str(state_dir)],
        start_new_session=True,
    )
    deadline = Deadline(T)
    while not any(destination.iterdir()):  # rsync has started writing
        assert crashing.poll() is None, "the transfer ended before it could be killed"
        assert not deadline.passed(), f"rsync wrote nothing within {T}s"
        time.sleep(0.005)
    os.killpg(crashing.pid, signal.SIGKILL)  # the whole process group, like a crash
    crashing.wait()

    status = asyncio.run(provider.status(timeout=T))
    reaped = Deadline(5.0)  # the killed rsync may take a moment to be reaped
    while status.relationship_status is RelationshipStatus.TRANSFERRING and not reaped.passed():
        time.sleep(0.05)
        status = asyncio.run(provider.status(timeout=T))
    assert not status.healthy
    assert status.error is not None and "interrupted" in status.error
    asyncio.run(provider.transfer_now(timeout=T))
    assert asyncio.run(provider.status(timeout=T)).healthy
    assert tree(destination) == tree(source)


def test_the_schedule_transfers_new_files_without_being_asked(volume: Volume) -> None:
    source, destination = folders(volume)
    settings = volume.replication.model_copy(update={"schedule": timedelta(seconds=1)})
    engine = LocalProvider(volume.model_copy(update={"replication": settings}))

    async def baseline_done() -> bool:
        return (await engine.status(timeout=T)).last_transfer_end is not None

    async def arrived() -> bool:
        return (destination / "arrives-by-schedule").exists()

    async def scenario() -> None:
        stop = asyncio.Event()
        serving = asyncio.create_task(engine.serve(stop))
        try:
            # The first scheduled transfer is the baseline: the file must come by a later one.
            await until(baseline_done, T, "the scheduled baseline")
            (source / "arrives-by-schedule").write_text("x")
            await until(arrived, 6.0, "the new file, by a scheduled transfer")
        finally:
            stop.set()
            await asyncio.wait_for(serving, 10)
            await engine.close()

    asyncio.run(scenario())


def test_continuous_replication_carries_each_nfs_write_within_about_a_second(
    volume: Volume,
) -> None:
    """Ganesha's writes reach the tracker like local ones: each write made over NFS is
    on the destination about a second later, without a walk of the tree."""
    source, destination = folders(volume)
    settings = volume.replication.model_copy(update={"schedule": "continuous"})
    engine = LocalProvider(volume.model_copy(update={"replication": settings}))
    waits: list[float] = []

    async def tracked() -> bool:
        status = await engine.status(timeout=T)
        return status.healthy and status.lag_source == "tracker"

    async def scenario() -> None:
        stop = asyncio.Event()
        serving = asyncio.create_task(engine.serve(stop))
        try:
            await until(tracked, T, "the first walk, after which changes are tracked")
            for i in range(10):
                await nfs_write(volume.replicas[0].export, f"over-nfs-{i}")
                written = time.monotonic()

                async def arrived(name: str = f"over-nfs-{i}") -> bool:
                    path = destination / name
                    return path.exists() and path.read_bytes() == b"written over NFS"

                await until(arrived, 10.0, f"over-nfs-{i} on the destination")
                waits.append(time.monotonic() - written)
            assert settings.state_dir is not None
            state = json.loads((settings.state_dir / "relationship.json").read_text())
            assert state["last_transfer"]["full"] is False  # sent, not walked
        finally:
            stop.set()
            await asyncio.wait_for(serving, 10)
            await engine.close()

    asyncio.run(scenario())
    assert tree(destination) == tree(source)
    waits.sort()
    assert waits[len(waits) // 2] < 1.0, waits
    assert waits[-1] < 2.0, waits


def test_a_cut_off_source_replicates_nothing_and_never_keeps_a_break_waiting(
    replication_lab: Lab, volume: Volume
) -> None:
    source, destination = folders(volume)
    settings = volume.replication.model_copy(update={"schedule": timedelta(seconds=1)})
    failures: list[str | None] = []
    retrying = asyncio.Event()

    class Watched(LocalProvider):
        """The engine, telling when a transfer starts after two have failed: the refused
        call below and a scheduled one, so the schedule is trying again."""

        async def transfer_now(
            self, *, timeout: float, progress: Progress | None = None
        ) -> OperationResult:
            if len(failures) >= 2:
                retrying.set()
            try:
                return await super().transfer_now(timeout=timeout, progress=progress)
            except ProviderError as exc:
                failures.append(exc.code)
                raise

    engine = Watched(volume.model_copy(update={"replication": settings}))
    asyncio.run(engine.transfer_now(timeout=T))
    (source / "written-before-the-outage").write_text("not replicated")

    async def scenario() -> tuple[str | None, float]:
        stop = asyncio.Event()
        serving = asyncio.create_task(engine.serve(stop))
        try:
            with pytest.raises(ProviderError) as refused:
                await engine.transfer_now(timeout=T)
            await asyncio.wait_for(retrying.wait(), T)  # the schedule keeps trying, and failing
            started = time.monotonic()
            await engine.break_(timeout=T)
            return refused.value.code, time.monotonic() - started
        finally:
            stop.set()
            await asyncio.wait_for(serving, 10)
            await engine.close()

    replication_lab.outage("az1")
    try:
        code, waited = asyncio.run(scenario())
    finally:
        replication_lab.restore("az1")
    assert code == "source-unreachable"
    assert not (destination / "written-before-the-outage").exists()
    # The failing schedule never held the lock long: the break got it within its deadline.
    assert waited < T


def test_the_replication_commands_drive_the_engine_and_print_json(
    replication_lab: Lab, volume: Volume
) -> None:
    source, destination = folders(volume)
    (source / "via-cli").write_text("x")
    config = str(replication_lab.config_path)

    def cli(*args: str) -> dict[str, object]:
        done = subprocess.run(
            [
                *CLI,
                "replication",
                *args,
                "crr",
                "--config",
                config,
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    transferred = cli("transfer")
    assert transferred["status"]["mirror_state"] == "mirrored"  # type: ignore[index]
    assert (destination / "via-cli").read_text() == "x"
    assert cli("break")["changed"] is True
    assert cli("status")["mirror_state"] == "broken"
    assert cli("divergence") == {
        "since": cli("divergence")["since"],
        "source_only": [],
        "destination_only": [],
    }
    resynced = cli("resync")
    assert resynced["status"]["mirror_state"] == "mirrored"  # type: ignore[index]


def test_a_forced_break_stops_a_running_transfer(
    provider: LocalProvider, volume: Volume, replication_lab: Lab
) -> None:
    source, destination = folders(volume)
    asyncio.run(provider.transfer_now(timeout=T))  # the baseline: breaking needs one
    for i in range(400):
        (source / f"f{i:03}").write_bytes(os.urandom(256 * 1024))
    state_dir = volume.replication.state_dir  # type: ignore[union-attr]
    transferring = subprocess.Popen(
        [*PYTHON, "-c", _TRANSFER, str(replication_lab.config_path), str(state_dir)],
        stderr=subprocess.PIPE,
    )
    try:
        deadline = Deadline(T)
        while not any(destination.iterdir()):
            assert transferring.poll() is None, "the transfer ended before the break"
            assert not deadline.passed(), f"rsync wrote nothing within {T}s"
            time.sleep(0.005)
        broken = asyncio.run(provider.break_(force=True, timeout=T))
        assert broken.status.mirror_state is MirrorState.BROKEN
        assert transferring.wait(timeout=T) != 0  # its rsync was stopped
    finally:
        transferring.kill()
        transferring.wait()


# -- the storage fence -------------------------------------------------------------------


def test_a_fenced_source_refuses_writes_over_nfs_until_it_is_unfenced(
    provider: LocalProvider, volume: Volume
) -> None:
    source = volume.replicas[0].export
    asyncio.run(provider.transfer_now(timeout=T))
    asyncio.run(provider.break_(timeout=T))  # both writable now: what a fence is for
    fenced = asyncio.run(provider.fence("site1", timeout=T))
    assert (fenced.changed, fenced.saved) == (True, {"access": "rw"})
    with pytest.raises(ProtocolStatusError, match="NFS3ERR_ROFS"):
        asyncio.run(nfs_write(source, "refused"))
    again = asyncio.run(provider.fence("site1", timeout=T))
    assert (again.changed, again.saved) == (False, {"access": "rw"})

    unfenced = asyncio.run(provider.unfence("site1", fenced.saved, timeout=T))
    assert unfenced.changed is True
    asyncio.run(nfs_write(source, "taken"))
    assert asyncio.run(provider.unfence("site1", fenced.saved, timeout=T)).changed is False


def test_a_fence_holds_through_the_engines_own_changes_of_direction(
    provider: LocalProvider, volume: Volume
) -> None:
    source = volume.replicas[0].export
    asyncio.run(provider.transfer_now(timeout=T))
    asyncio.run(provider.break_(timeout=T))
    fenced = asyncio.run(provider.fence("site1", timeout=T))
    asyncio.run(provider.reverse_resync(timeout=T))  # site1 a mirrored destination
    asyncio.run(provider.break_(timeout=T))  # a broken destination takes writes, unless fenced
    with pytest.raises(ProtocolStatusError, match="NFS3ERR_ROFS"):
        asyncio.run(nfs_write(source, "refused while fenced"))
    asyncio.run(provider.unfence("site1", fenced.saved, timeout=T))
    asyncio.run(nfs_write(source, "taken once unfenced"))


def test_a_fence_of_a_cut_off_replica_is_kept_and_confirmed_once_it_answers(
    replication_lab: Lab, provider: LocalProvider, volume: Volume
) -> None:
    asyncio.run(provider.transfer_now(timeout=T))
    asyncio.run(provider.break_(timeout=T))
    replication_lab.outage("az1")
    try:
        with pytest.raises(ProviderError, match="does not answer"):
            asyncio.run(provider.fence("site1", timeout=3))
    finally:
        replication_lab.restore("az1")
    later = asyncio.run(provider.fence("site1", timeout=T))
    assert (later.changed, later.saved) == (False, {"access": "rw"})
    with pytest.raises(ProtocolStatusError, match="NFS3ERR_ROFS"):
        asyncio.run(nfs_write(volume.replicas[0].export, "refused"))
