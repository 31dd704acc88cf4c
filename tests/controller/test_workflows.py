"""Workflows on the real lab: guarded, journaled, and resumable after a hard kill."""

from __future__ import annotations

import asyncio
import os
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from nfs_failover.config import Config, Hook, Volume
from nfs_failover.controller import fence
from nfs_failover.controller.workflows import (
    CRASH_ENV,
    CRASH_EXIT,
    WORKFLOWS,
    Context,
    Refused,
    confirm_writable,
    final_transfer,
    run,
)
from nfs_failover.errors import NfsFailoverError, ProtocolStatusError
from nfs_failover.lab import Lab
from nfs_failover.probe import Prober
from nfs_failover.replication import MirrorState
from nfs_failover.replication.local import LocalProvider
from nfs_failover.store import SqliteStore
from tests.controller.helpers import config_for
from tests.helpers import PYTHON
from tests.replication.helpers import T, folders, nfs_write, settle, tree

pytestmark = pytest.mark.lab


def failover(config: Config, provider: LocalProvider, store: SqliteStore) -> None:
    ctx = Context(config, config.volumes[0], provider, store, step_timeout=T)
    asyncio.run(run(ctx, "failover"))


def test_a_read_write_failover_after_a_real_outage_lands_writes_on_zone_2(
    replication_lab: Lab, volume: Volume, provider: LocalProvider, tmp_path: Path
) -> None:
    source, destination = folders(volume)
    (source / "before-the-outage").write_text("replicated")
    asyncio.run(provider.transfer_now(timeout=T))
    config = config_for(replication_lab, volume, tmp_path)
    store = SqliteStore(tmp_path / "state.db")
    replication_lab.outage("az1")
    try:
        failover(config, provider, store)
        desired = store.get_desired("crr")
        assert desired is not None
        assert (desired.offered, desired.fenced) == (("dest1",), ("site1",))
        asyncio.run(nfs_write(volume.replicas[1].export, "after-the-failover"))
        assert (destination / "after-the-failover").read_bytes() == b"written over NFS"
        assert (destination / "before-the-outage").read_text() == "replicated"
    finally:
        replication_lab.restore("az1")
    steps = [(e.step, e.phase) for e in store.events("crr") if e.workflow]
    assert steps[0] == ("check-replication", "before") and steps[-1] == ("post-hooks", "after")


def test_a_lag_above_max_lag_refuses_the_failover_and_changes_nothing(
    replication_lab: Lab, volume: Volume, provider: LocalProvider, tmp_path: Path
) -> None:
    asyncio.run(provider.transfer_now(timeout=T))
    config = config_for(replication_lab, volume, tmp_path, max_lag=timedelta(milliseconds=1))
    store = SqliteStore(tmp_path / "state.db")
    with pytest.raises(Refused, match=r"no failover: lag .* exceeds max_lag 1ms"):
        failover(config, provider, store)
    assert store.get_desired("crr") is None
    last = store.last_workflow("crr")
    assert last is not None and last.status == "refused"
    assert asyncio.run(provider.status(timeout=T)).mirror_state is MirrorState.MIRRORED


_FAILOVER = """
import asyncio, sys
from pathlib import Path
from nfs_failover.config import Config
from nfs_failover.controller.workflows import Context, run
from nfs_failover.replication.local import LocalProvider
from nfs_failover.store import SqliteStore
config = Config.model_validate_json(Path(sys.argv[1]).read_text())
volume = config.volumes[0]
asyncio.run(run(Context(config, volume, LocalProvider(volume),
                        SqliteStore(config.store.sqlite_path), step_timeout=30), "failover"))
"""


@pytest.mark.parametrize("crash_at", range(len(WORKFLOWS["failover"])))
def test_a_failover_killed_at_any_step_resumes_breaks_once_and_never_offers_two_writers(
    replication_lab: Lab, volume: Volume, tmp_path: Path, crash_at: int
) -> None:
    config = config_for(replication_lab, volume, tmp_path, read_only_fallback=True)
    engine = LocalProvider(config.volumes[0])
    asyncio.run(engine.transfer_now(timeout=T))
    saved = tmp_path / "config.json"
    saved.write_text(config.model_dump_json())
    killed = subprocess.run(
        [*PYTHON, "-c", _FAILOVER, str(saved)],
        env={**os.environ, CRASH_ENV: f"failover:{crash_at}"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert killed.returncode == CRASH_EXIT, killed.stderr

    store = SqliteStore(tmp_path / "state.db")  # the restarted controller
    running = store.running_workflow("crr")
    assert running is not None and running.step == crash_at
    ctx = Context(config, config.volumes[0], engine, store, step_timeout=T)
    asyncio.run(run(ctx, "failover", resume=running))

    assert asyncio.run(engine.status(timeout=T)).mirror_state is MirrorState.BROKEN
    events = store.events("crr")
    breaks = [e for e in events if e.step == "break" and e.phase == "after"]
    assert [e.detail["break_changed"] for e in breaks] == [True]  # broken exactly once
    broke_at = events.index(breaks[0])
    offers = [(i, e.detail["offered"]) for i, e in enumerate(events) if e.kind == "desired"]
    assert all(len(offered) == 1 for i, offered in offers if i > broke_at)  # type: ignore[arg-type]
    before = [offered for i, offered in offers if i < broke_at]
    assert before and before[-1] == ["site1"]  # the read-only fallback withdrawn first
    final = store.get_desired("crr")
    assert final is not None and (final.offered, final.fenced) == (("dest1",), ("site1",))
    asyncio.run(engine.close())


def test_failback_preserves_what_only_the_old_source_had_and_restores_the_direction(
    replication_lab: Lab, volume: Volume, provider: LocalProvider, tmp_path: Path
) -> None:
    source, destination = folders(volume)
    (source / "base").write_text("replicated")
    settle()
    asyncio.run(provider.transfer_now(timeout=T))
    settle()
    (source / "late-on-source").write_text("written after the last transfer")
    config = config_for(replication_lab, volume, tmp_path)
    store = SqliteStore(tmp_path / "state.db")
    replication_lab.outage("az1")
    try:
        failover(config, provider, store)
        asyncio.run(nfs_write(volume.replicas[1].export, "after-failover"))
    finally:
        replication_lab.restore("az1")

    ctx = Context(config, config.volumes[0], provider, store, step_timeout=T)
    done = asyncio.run(run(ctx, "failback"))
    last = store.last_workflow("crr")
    assert last is not None and last.status == "done"
    preserved = last.data["preserved_old-source"]
    assert isinstance(preserved, dict) and preserved["files"] == ["late-on-source"]
    folder = Path(str(preserved["folder"]))
    assert (folder / "late-on-source").read_text() == "written after the last transfer"
    assert folder.stat().st_mode & 0o077 == 0  # users' data, readable by root only
    assert done.id == last.id

    status = asyncio.run(provider.status(timeout=T))
    assert (status.mirror_state, status.source) == (MirrorState.MIRRORED, "site1")
    assert (source / "after-failover").read_bytes() == b"written over NFS"
    assert tree(source) == tree(destination)
    desired = store.get_desired("crr")
    assert desired is not None and (desired.offered, desired.fenced) == (("site1",), ())


_FAILBACK = _FAILOVER.replace('"failover"))', '"failback"))')


@pytest.mark.parametrize("crash_at", range(len(WORKFLOWS["failback"])))
def test_a_failback_killed_at_any_step_resumes_and_completes(
    replication_lab: Lab, volume: Volume, tmp_path: Path, crash_at: int
) -> None:
    config = config_for(replication_lab, volume, tmp_path)
    engine = LocalProvider(config.volumes[0])
    source, destination = folders(volume)
    (source / "base").write_text("replicated")
    asyncio.run(engine.transfer_now(timeout=T))
    store = SqliteStore(tmp_path / "state.db")
    failover(config, engine, store)
    asyncio.run(nfs_write(volume.replicas[1].export, "after-failover"))
    saved = tmp_path / "config.json"
    saved.write_text(config.model_dump_json())
    killed = subprocess.run(
        [*PYTHON, "-c", _FAILBACK, str(saved)],
        env={**os.environ, CRASH_ENV: f"failback:{crash_at}"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert killed.returncode == CRASH_EXIT, killed.stderr
    running = store.running_workflow("crr")
    assert running is not None and (running.kind, running.step) == ("failback", crash_at)
    ctx = Context(config, config.volumes[0], engine, store, step_timeout=T)
    asyncio.run(run(ctx, "failback", resume=running))

    status = asyncio.run(engine.status(timeout=T))
    assert (status.mirror_state, status.source) == (MirrorState.MIRRORED, "site1")
    assert (source / "after-failover").read_bytes() == b"written over NFS"
    assert tree(source) == tree(destination)
    events = store.events("crr")
    breaks = [
        e.detail["break_changed"]
        for e in events
        if e.step == "break-reverse" and e.phase == "after"
    ]
    assert breaks == [True]  # the reverse relationship was broken exactly once
    offers = [e.detail["offered"] for e in events if e.kind == "desired"]
    assert all(len(offered) == 1 for offered in offers)  # type: ignore[arg-type]
    asyncio.run(engine.close())


def test_a_failing_pre_hook_stops_the_failover_before_anything_changes(
    replication_lab: Lab, volume: Volume, provider: LocalProvider, tmp_path: Path
) -> None:
    asyncio.run(provider.transfer_now(timeout=T))
    config = config_for(replication_lab, volume, tmp_path)
    hooks = config.hooks.model_copy(update={"pre_failover": (Hook(argv=("/bin/false",)),)})
    config = config.model_copy(update={"hooks": hooks})
    store = SqliteStore(tmp_path / "state.db")
    with pytest.raises(Refused, match="pre_failover hook failed: hook /bin/false exited 1"):
        failover(config, provider, store)
    assert store.get_desired("crr") is None
    assert asyncio.run(provider.status(timeout=T)).mirror_state is MirrorState.MIRRORED


def test_confirm_writable_paces_its_tries_on_a_destination_that_stays_read_only(
    replication_lab: Lab,
    volume: Volume,
    provider: LocalProvider,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asyncio.run(provider.transfer_now(timeout=T))  # mirrored: the destination is read-only
    config = config_for(replication_lab, volume, tmp_path)
    store = SqliteStore(tmp_path / "state.db")
    tries = []
    probe = Prober.probe

    async def counted(self: Prober, export: object, **kwargs: object) -> object:
        tries.append(export)
        return await probe(self, export, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Prober, "probe", counted)
    ctx = Context(config, config.volumes[0], provider, store, step_timeout=3.0)
    with pytest.raises(NfsFailoverError, match=r"dest1 does not take writes after \d+ tries in 3s"):
        asyncio.run(confirm_writable(ctx))
    assert 3 <= len(tries) <= 8  # paced (0.2 s, 0.4 s, ... up to 2 s), not back to back


def test_the_final_transfer_is_given_the_policys_transfer_wait(
    replication_lab: Lab, volume: Volume, tmp_path: Path
) -> None:
    config = config_for(replication_lab, volume, tmp_path, transfer_wait=timedelta(seconds=42))
    given: list[float] = []

    class Recording(LocalProvider):
        async def transfer_now(self, *, timeout: float, progress: object = None) -> None:
            given.append(timeout)

    recording = Recording(config.volumes[0])
    store = SqliteStore(tmp_path / "state.db")
    asyncio.run(
        final_transfer(Context(config, config.volumes[0], recording, store, step_timeout=7))
    )
    assert given == [42.0]


def test_an_old_source_down_at_the_failover_is_fenced_at_the_storage_once_back_until_failback(
    replication_lab: Lab, volume: Volume, provider: LocalProvider, tmp_path: Path
) -> None:
    asyncio.run(provider.transfer_now(timeout=T))
    config = config_for(replication_lab, volume, tmp_path)
    store = SqliteStore(tmp_path / "state.db")
    replication_lab.outage("az1")
    try:
        failover(config, provider, store)
        pending = fence.latest(store, "crr")
        # Not taken yet: wanted, or saved and changed but not confirmed (no answer).
        assert pending is not None
        assert pending.state in (fence.FenceState.PENDING, fence.FenceState.FENCING)
    finally:
        replication_lab.restore("az1")

    async def retried() -> None:  # the loop's try, once the old source answers
        retrier = fence.Retrier(store)
        retrier.poke("crr", provider)
        await retrier.settle()

    asyncio.run(retried())
    fenced = fence.latest(store, "crr")
    assert fenced is not None and fenced.state is fence.FenceState.FENCED
    assert fenced.saved == {"access": "rw"}
    # A client no map steers, writing straight to the old source, is refused.
    with pytest.raises(ProtocolStatusError, match="NFS3ERR_ROFS"):
        asyncio.run(nfs_write(volume.replicas[0].export, "hand-typed mount"))

    ctx = Context(config, config.volumes[0], provider, store, step_timeout=T)
    asyncio.run(run(ctx, "failback"))
    lifted = fence.latest(store, "crr")
    assert lifted is not None and lifted.state is fence.FenceState.UNFENCED
    asyncio.run(nfs_write(volume.replicas[0].export, "after-failback"))
