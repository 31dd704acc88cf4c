"""A client workload that really talks NFS: creates, writes, reads back and lists files.

It records every write the server acknowledged (a FILE_SYNC write whose full length was
taken), so a drill can check afterwards that nothing acknowledged was lost. Which replica
it talks to is asked of ``resolve`` before each file, as a client asks autofs; the NFS I/O
goes through the project's own client, since the test machines have no kernel NFS client.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from nfs_failover.config import Export
from nfs_failover.errors import RpcError
from nfs_failover.nfs_tree import open_export
from nfs_failover.rpc.nfs3 import CreateMode, Nfs3Client, StableHow


@dataclass(frozen=True)
class Ack:
    """A write the server acknowledged: this content is owed at this path."""

    path: str
    sha256: str
    export: str
    at: float


@dataclass(frozen=True)
class Failure:
    export: str
    at: float
    reason: str


@dataclass(frozen=True)
class Verification:
    acknowledged: int
    present: int
    preserved: tuple[str, ...]
    lost: tuple[str, ...]  # acknowledged, and neither on the final source nor preserved

    @property
    def passed(self) -> bool:
        return not self.lost


@dataclass
class Workload:
    resolve: Callable[[], Awaitable[Export]]
    file_size: int = 4096
    timeout: float = 2.0
    pause: float = 0.05
    acks: list[Ack] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    reads: int = 0
    _session: tuple[Export, Nfs3Client, bytes] | None = None
    _counter: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Write, read back and list until ``stop`` is set; never raises for NFS errors."""
        try:
            while not stop.is_set():
                await self.step()
                await asyncio.sleep(self.pause)
        finally:
            await self._drop()

    async def step(self) -> Ack | None:
        """One file: create, FILE_SYNC write, read back, and a listing now and then."""
        export = await self.resolve()
        self._counter += 1
        name = f"w{os.getpid()}-{self._counter:07d}"
        data = os.urandom(self.file_size)
        try:
            async with asyncio.timeout(self.timeout):
                nfs, root = await self._connect(export)
                fh = await nfs.create(root, name, mode=CreateMode.UNCHECKED)
                written = await nfs.write(fh, 0, data, StableHow.FILE_SYNC)
                if written.count != len(data) or written.committed != StableHow.FILE_SYNC:
                    raise RpcError(f"short or unstable write: {written.count} bytes")
                ack = Ack(name, hashlib.sha256(data).hexdigest(), str(export), time.time())
                self.acks.append(ack)
                back = await nfs.read(fh, 0, len(data))
                if back.data != data:
                    raise RpcError(f"{name}: read back differs from what was written")
                self.reads += 1
                if self._counter % 20 == 0:
                    await nfs.listdir(root)
                return ack
        except (RpcError, TimeoutError) as exc:
            self.failures.append(Failure(str(export), time.time(), str(exc) or "timeout"))
            await self._drop()
            return None

    async def _connect(self, export: Export) -> tuple[Nfs3Client, bytes]:
        if self._session is not None and self._session[0] == export:
            return self._session[1], self._session[2]
        await self._drop()
        nfs, root = await open_export(export, timeout=self.timeout)
        self._session = (export, nfs, root)
        return nfs, root

    async def _drop(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session[1].close()

    def verify(
        self, final: Mapping[str, bytes], preserved: Mapping[str, bytes] | None = None
    ) -> Verification:
        """Every acknowledged write must be on the final source with its content, or in
        the preserved set; anything else is lost."""
        kept = preserved or {}
        present, saved, lost = 0, [], []
        for ack in self.acks:
            if _digest(final.get(ack.path)) == ack.sha256:
                present += 1
            elif _digest(kept.get(ack.path)) == ack.sha256:
                saved.append(ack.path)
            else:
                lost.append(ack.path)
        return Verification(len(self.acks), present, tuple(saved), tuple(lost))


def _digest(data: bytes | None) -> str | None:
    return hashlib.sha256(data).hexdigest() if data is not None else None
