"""The drill's client: it finds its replica the way a real client does, through autofs.

A real client's first access to the volume makes the automount daemon mount the replica
the rendered map offers; that mount is then used until it goes away. Here the daemon is
Debian's real automount in a client host, reading the agent's maps; a fresh access there
mounts the replica with the kernel NFS client, and that is the replica the workload then
talks to from the host with the project's own NFS client.

The client asks again only when its "mount" would be gone: after the daemon re-read its
map (the agent's reload after a steering change, when the agent also lazily unmounts a
mount left on a replica no longer offered). A hung hard mount on a dead replica retries
that replica, as this client does until then.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import PurePosixPath

from nfs_failover.config import Export
from nfs_failover.lab.automount import RELOADED, GuestAutomount


@dataclass(frozen=True)
class Lookup:
    at: float  # epoch seconds when the answer came
    seconds: float  # what the lookup cost
    replica: str | None  # HOST:/PATH the daemon would mount, None when nothing is offered


class AutofsClient:
    def __init__(self, daemon: GuestAutomount, key: PurePosixPath, *, poll: float = 0.05) -> None:
        self.daemon = daemon
        self.key = key
        self.poll = poll
        self.moved = asyncio.Event()  # the daemon re-read its map since the last lookup
        self.lookups: list[Lookup] = []
        self._current: Export | None = None
        self._reloads = 0  # reloads (RELOADED lines) seen in the log so far
        self._reloads_at_lookup = 0
        self._offset = 0
        self._watcher: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AutofsClient:
        self._offset = self.daemon.log.stat().st_size
        self._watcher = asyncio.create_task(self._watch())
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher

    @property
    def current(self) -> Export | None:
        """The replica in use now, if any."""
        return self._current

    async def resolve(self) -> Export:
        """The replica in use; a fresh lookup in the daemon after a reload (or at first)."""
        while True:
            if self._current is not None and not self.moved.is_set():
                return self._current
            self.moved.clear()
            self._reloads_at_lookup = self._reloads
            started = time.monotonic()
            found = await asyncio.to_thread(self.daemon.replica_for, self.key, 30.0)
            self.lookups.append(Lookup(time.time(), time.monotonic() - started, found))
            if self._reloads > self._reloads_at_lookup:
                self.moved.set()  # reloaded while we asked: ask again
            if found is not None:
                self._current = Export.parse(found)
                return self._current
            self._current = None
            await asyncio.sleep(0.2)  # nothing offered right now

    async def _watch(self) -> None:
        """Follow the daemon's log for map reloads."""
        while True:
            seen = await asyncio.to_thread(self._read_new)
            if seen:
                self._reloads += seen
                self.moved.set()
            await asyncio.sleep(self.poll)

    def _read_new(self) -> int:
        with open(self.daemon.log, "rb") as log:
            log.seek(self._offset)
            chunk = log.read()
        # Only whole lines: a line still being written is read again next time.
        end = chunk.rfind(b"\n") + 1
        self._offset += end
        return chunk[:end].count(RELOADED.encode())
