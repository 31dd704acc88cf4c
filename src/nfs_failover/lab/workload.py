"""A client workload that really talks NFS: creates, writes, reads back and lists files.

It records every write the server acknowledged (a FILE_SYNC write whose full length was
taken), so a drill can check afterwards that nothing acknowledged was lost. Which replica
it talks to is asked of ``resolve`` before each file, as a client asks autofs; the NFS I/O
goes through the project's own client, since the test machines have no kernel NFS client.

A read-only workload reads back files written earlier (``known``) and checks their
content. Setting ``interrupt`` abandons the operation in flight, as a client whose hung
mount was unmounted under it: the next one asks ``resolve`` again.
"""

from __future__ import annotations

import asyncio
import contextlib
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
class Op:
    """One operation as the client saw it, for timelines."""

    at: float
    export: str
    kind: str  # "write" or "read"
    ok: bool


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
    prefix: str = ""
    read_only: bool = False
    known: dict[str, str] = field(default_factory=dict)  # path -> sha256, for reads
    interrupt: asyncio.Event | None = None
    acks: list[Ack] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
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
        """One file: create, FILE_SYNC write, read back, and a listing now and then (or,
        read-only, one known file read and checked)."""
        export = await self.resolve()
        self._counter += 1
        kind = "read" if self.read_only else "write"
        operation = self._read(export) if self.read_only else self._write(export)
        try:
            ack = await self._bounded(operation)
        except (RpcError, TimeoutError, _Interrupted) as exc:
            reason = "interrupted" if isinstance(exc, _Interrupted) else str(exc) or "timeout"
            self.failures.append(Failure(str(export), time.time(), reason))
            self.ops.append(Op(time.time(), str(export), kind, False))
            await self._drop()
            return None
        self.ops.append(Op(time.time(), str(export), kind, True))
        return ack

    async def _bounded(self, operation: Awaitable[Ack | None]) -> Ack | None:
        """``operation`` within the timeout, abandoned early when ``interrupt`` is set."""
        task = asyncio.ensure_future(operation)
        if self.interrupt is None:
            async with asyncio.timeout(self.timeout):
                return await task
        waiter = asyncio.ensure_future(self.interrupt.wait())
        try:
            done, _ = await asyncio.wait(
                {task, waiter}, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, RpcError):
            await task
        raise _Interrupted() if waiter in done else TimeoutError()

    async def _write(self, export: Export) -> Ack:
        name = f"{self.prefix}w{os.getpid()}-{self._counter:07d}"
        data = os.urandom(self.file_size)
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

    async def _read(self, export: Export) -> None:
        if not self.known:
            raise RpcError("nothing to read: no known files")
        names = sorted(self.known)
        name = names[self._counter % len(names)]
        nfs, root = await self._connect(export)
        fh, _ = await nfs.lookup(root, name)
        back = await nfs.read(fh, 0, self.file_size * 2)
        if hashlib.sha256(back.data).hexdigest() != self.known[name]:
            raise RpcError(f"{name}: read differs from what was written")
        self.reads += 1

    async def close(self) -> None:
        """Close the NFS session (``run`` does it when it stops)."""
        await self._drop()

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


class _Interrupted(Exception):
    """The client was steered elsewhere while an operation was in flight."""


def _digest(data: bytes | None) -> str | None:
    return hashlib.sha256(data).hexdigest() if data is not None else None
