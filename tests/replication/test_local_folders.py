"""The local engine's scheduler, lag and state on plain folders, without the lab.

The engine checks over NFS that the source answers before each transfer; these tests
leave that one check out (``Unprobed``), since no Ganesha serves their folders. The lab
tests (test_local.py) keep it, and test it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from nfs_failover.config import Volume
from nfs_failover.pacing import Deadline, Pacer
from nfs_failover.replication import MirrorState
from nfs_failover.replication.local import LocalProvider
from tests.helpers import PYTHON
from tests.replication.trees import snapshot

pytestmark = pytest.mark.skipif(shutil.which("rsync") is None, reason="needs rsync")

T = 30.0


class Unprobed(LocalProvider):
    """The engine without its NFS check of the source: these folders have no server."""

    async def _require_reachable(self, index: int, deadline: Deadline) -> None:
        return None


def folder_volume(tmp_path: Path, **replication: object) -> Volume:
    for name in ("source", "destination"):
        (tmp_path / name).mkdir(exist_ok=True)
    return Volume.model_validate(
        {
            "name": "vol",
            "mode": "read-write",
            "replicas": [
                {"name": "site1", "export": "127.0.0.1:/source"},
                {"name": "dest1", "export": "127.0.0.1:/destination"},
            ],
            "replication": {
                "provider": "local",
                "source_path": str(tmp_path / "source"),
                "destination_path": str(tmp_path / "destination"),
                "state_dir": str(tmp_path / "state"),
                **replication,
            },
        }
    )


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    pacer = Pacer.every(0.02, Deadline(timeout))
    while not await check():
        if not await pacer.pause():
            raise AssertionError(f"not within {timeout}s: {what}")


class Serving:
    """The engine's scheduler running in the background of an asyncio test."""

    def __init__(self, engine: LocalProvider) -> None:
        self.engine = engine
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Serving:
        self.task = asyncio.create_task(self.engine.serve(self.stop))
        await until(self.walked, T, "the first walk of the whole tree")
        return self

    async def __aexit__(self, *_: object) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 10)

    async def walked(self) -> bool:
        tracker = self.engine._tracker
        status = await self.engine.status(timeout=T)
        return status.healthy and tracker is not None and tracker.missed is None


def test_continuous_replication_sends_changes_while_writes_go_on_and_the_lag_ends_at_zero(
    tmp_path: Path,
) -> None:
    volume = folder_volume(tmp_path, schedule="continuous")
    source, destination = tmp_path / "source", tmp_path / "destination"
    for i in range(200):
        (source / f"f{i:03}").write_bytes(b"x" * 100)
    engine = Unprobed(volume)
    lags: list[float] = []

    async def scenario() -> None:
        async with Serving(engine):
            started = time.monotonic()
            i = 0
            while time.monotonic() - started < 3.0:  # 50 writes a second
                (source / f"f{i % 200:03}").write_bytes(b"y" * (i % 500))
                i += 1
                status = await engine.status(timeout=T)
                assert status.lag is not None and status.lag_source == "tracker"
                lags.append(status.lag.total_seconds())
                await asyncio.sleep(0.02)

            async def caught_up() -> bool:
                return snapshot(source) == snapshot(destination)

            await until(caught_up, 30.0, "the destination to hold every write")

            async def no_lag() -> bool:  # nothing left to send: the oldest change is gone
                status = await engine.status(timeout=T)
                return status.lag is not None and status.lag.total_seconds() == 0

            await until(no_lag, 30.0, "the lag to come back to zero")

    asyncio.run(scenario())
    asyncio.run(engine.close())
    # Transfers came while the writes went on, not once at the end: the lag seen under
    # writes fell back down (how far, and how soon, is bench/replication.py's to say).
    assert min(lags[len(lags) // 2 :]) < max(lags[: len(lags) // 2]), lags
    state = json.loads((tmp_path / "state" / "relationship.json").read_text())
    assert state["last_transfer"]["full"] is False  # changes were sent, not walked


def test_an_engine_restarted_walks_the_whole_tree_first_and_carries_what_changed_meanwhile(
    tmp_path: Path,
) -> None:
    volume = folder_volume(tmp_path, schedule="continuous")
    source, destination = tmp_path / "source", tmp_path / "destination"
    (source / "before").write_text("1")

    async def serve_once() -> None:
        engine = Unprobed(volume)
        async with Serving(engine):
            pass
        await engine.close()

    asyncio.run(serve_once())
    assert (destination / "before").read_text() == "1"
    (source / "while-down").write_text("2")  # nobody watches now
    asyncio.run(serve_once())
    assert (destination / "while-down").read_text() == "2"
    state = json.loads((tmp_path / "state" / "relationship.json").read_text())
    walks = [e for e in state["history"] if e["event"] == "transfer"]
    assert [w["why"] for w in walks] == [
        "no transfer has completed yet",
        "changes made while the tracker was not running are unknown",
    ]


def test_an_interval_schedule_sends_nothing_when_nothing_changed(tmp_path: Path) -> None:
    volume = folder_volume(tmp_path, schedule="1s")
    engine = Unprobed(volume)

    async def scenario() -> tuple[float, float]:
        async with Serving(engine):
            before = (await engine.status(timeout=T)).last_transfer_end
            await asyncio.sleep(2.5)
            after = (await engine.status(timeout=T)).last_transfer_end
            assert before is not None and after is not None
            return before.timestamp(), after.timestamp()

    before, after = asyncio.run(scenario())
    asyncio.run(engine.close())
    assert before == after


_STATUS = """
import asyncio, json, sys
from nfs_failover.config import Volume
from nfs_failover.replication.local import LocalProvider
engine = LocalProvider(Volume.model_validate_json(sys.argv[1]))
status = asyncio.run(engine.status(timeout=5))
print(json.dumps([status.lag.total_seconds(), status.lag_source]))
"""


def test_another_process_reads_the_lag_the_serving_engine_records(tmp_path: Path) -> None:
    volume = folder_volume(tmp_path, schedule="1d", full_walk_interval="1d")
    engine = Unprobed(volume)

    def status_elsewhere() -> tuple[float, str]:
        done = subprocess.run(
            [*PYTHON, "-c", _STATUS, volume.model_dump_json()],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        lag, source = json.loads(done.stdout)
        return lag, source

    async def scenario() -> tuple[tuple[float, str], tuple[float, str]]:
        async with Serving(engine):
            engine._record_tracking(engine._load())
            quiet = await asyncio.to_thread(status_elsewhere)
            (tmp_path / "source" / "waits-a-day").write_text("x")
            await until(lambda: _pending(engine), 5.0, "the tracker to see the write")
            engine._record_tracking(engine._load())
            waiting = await asyncio.to_thread(status_elsewhere)
            return quiet, waiting

    quiet, waiting = asyncio.run(scenario())
    asyncio.run(engine.close())
    assert quiet == (0.0, "tracker")
    assert waiting[1] == "tracker" and 0.0 < waiting[0] < 30.0
    # The engine stopped: another process falls back to the last transfer's age.
    elsewhere = status_elsewhere()
    assert elsewhere[1] == "manifest"


async def _pending(engine: LocalProvider) -> bool:
    return engine._tracker is not None and engine._tracker.oldest() is not None


def test_a_break_waiting_for_the_lock_is_let_through_between_continuous_transfers(
    tmp_path: Path,
) -> None:
    volume = folder_volume(tmp_path, schedule="continuous", debounce="10ms")
    source = tmp_path / "source"
    engine = Unprobed(volume)
    other = Unprobed(volume)  # another operation's view, as a CLI command has
    other.poll_interval = 0.05

    async def scenario() -> float:
        async with Serving(engine):
            writing = asyncio.create_task(_write_steadily(source, 3.0))
            await asyncio.sleep(0.5)
            started = time.monotonic()
            await other.break_(timeout=T)
            waited = time.monotonic() - started
            await writing
            return waited

    waited = asyncio.run(scenario())
    status = asyncio.run(engine.status(timeout=T))
    asyncio.run(engine.close())
    asyncio.run(other.close())
    assert status.mirror_state is MirrorState.BROKEN
    assert waited < 2.0


async def _write_steadily(folder: Path, seconds: float) -> None:
    started = time.monotonic()
    i = 0
    while time.monotonic() - started < seconds:
        (folder / f"w{i % 50}").write_bytes(b"z" * (i % 300))
        i += 1
        await asyncio.sleep(0.005)


def test_after_a_reverse_resync_the_engine_tracks_the_new_source(tmp_path: Path) -> None:
    volume = folder_volume(tmp_path, schedule="continuous")
    source, destination = tmp_path / "source", tmp_path / "destination"
    (source / "data").write_text("v1")
    engine = Unprobed(volume)

    async def arrived(path: Path, text: str) -> bool:
        return path.exists() and path.read_text() == text

    async def scenario() -> None:
        async with Serving(engine):
            await until(lambda: arrived(destination / "data", "v1"), T, "the first walk")
            await engine.break_(timeout=T)
            (destination / "data").write_text("v2, written after the failover")
            await engine.reverse_resync(timeout=T)
            await until(
                lambda: arrived(source / "data", "v2, written after the failover"),
                T,
                "the reverse resync",
            )
            await until(lambda: _tracked(engine), T, "a tracker on the new source")
            (destination / "new").write_text("written on the new source")
            await until(
                lambda: arrived(source / "new", "written on the new source"),
                5.0,
                "the change, sent to the old source",
            )

    asyncio.run(scenario())
    asyncio.run(engine.close())
    state = json.loads((tmp_path / "state" / "relationship.json").read_text())
    assert state["reversed"] is True and state["last_transfer"]["full"] is False


async def _tracked(engine: LocalProvider) -> bool:
    return (await engine.status(timeout=T)).lag_source == "tracker"
