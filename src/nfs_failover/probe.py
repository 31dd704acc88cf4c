"""Health probes: does an NFS export answer the way a client needs it to, right now?

A probe walks the stages a client walks (portmapper, GETPORT of mountd and nfs, NULL of
each, MNT of the export, GETATTR of its root handle, optionally a write) under one
deadline for the whole walk, and says which stage failed, why, and how long each took.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import TypeVar

from nfs_failover.config import Export
from nfs_failover.errors import (
    ProtocolStatusError,
    RpcAcceptError,
    RpcConnectionError,
    RpcError,
    RpcRejected,
    RpcTimeout,
    XdrError,
)
from nfs_failover.rpc.client import AuthSys, ProgramClient
from nfs_failover.rpc.mount import MOUNT_PROGRAM, MOUNT_VERSION, MountClient
from nfs_failover.rpc.nfs3 import NFS_PROGRAM, NFS_VERSION, Nfs3Client, StableHow
from nfs_failover.rpc.portmap import PMAP_PORT, PMAP_PROGRAM, PortmapClient

T = TypeVar("T")
C = TypeVar("C", bound=ProgramClient)

PROBE_FILE_PREFIX = ".nfs-failover-probe"


class Stage(StrEnum):
    """The stages of a probe, in the order a client needs them.

    MOUNTD and NFS are the connection and the program's NULL; the NULL is pipelined with
    MNT or GETATTR, so its round trip is counted in the stage after it.
    """

    PORTMAP = "portmap"
    GETPORT = "getport"
    MOUNTD = "mountd"
    MNT = "mnt"
    NFS = "nfs"
    GETATTR = "getattr"
    WRITE = "write"


class Reason(StrEnum):
    """Why a stage failed, in families a caller can act on."""

    TIMEOUT = "timeout"
    REFUSED = "refused"
    RPC_ERROR = "rpc-error"
    NOT_REGISTERED = "not-registered"
    MALFORMED = "malformed-reply"
    STATUS = "status"  # the program's own error: MNT3ERR_* or NFS3ERR_*


@dataclass(frozen=True)
class StageResult:
    stage: Stage
    ok: bool
    latency_s: float
    reason: Reason | None = None
    detail: str = ""


@dataclass(frozen=True)
class ProbeResult:
    """One probe of one export. ``up`` means a client could mount it and reach its root."""

    export: str
    up: bool
    stages: tuple[StageResult, ...]
    latency_s: float
    writable: bool | None = None  # None when not asked, or when the probe failed earlier

    @property
    def failed(self) -> StageResult | None:
        return next((s for s in self.stages if not s.ok), None)

    def summary(self) -> str:
        failed = self.failed
        if failed is None:
            extra = {True: ", writable", False: ", read-only", None: ""}[self.writable]
            return f"up in {self.latency_s * 1000:.1f} ms{extra}"
        return f"down at {failed.stage}: {failed.detail}"

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        failed = self.failed
        data["failed_stage"] = failed.stage.value if failed else None
        data["reason"] = failed.reason.value if failed and failed.reason else None
        return data


class _StageFailed(Exception):
    def __init__(self, result: StageResult) -> None:
        self.result = result


@dataclass
class _Walk:
    """The bookkeeping of one probe: a shared deadline and the stages done so far.

    Every call in a stage gets ``remaining()`` as its own deadline, so the whole walk
    ends by the probe's deadline without a timer per stage.
    """

    deadline: float
    timeout: float
    stages: list[StageResult] = field(default_factory=list)

    def remaining(self) -> float:
        return max(self.deadline - time.monotonic(), 0.0)

    async def stage(self, stage: Stage, work: Awaitable[T]) -> T:
        start = time.monotonic()
        try:
            value = await work
        except RpcError as exc:
            reason, detail = classify(exc)
            if reason is Reason.TIMEOUT:
                detail = f"no answer within the probe's {self.timeout:g}s deadline"
            raise self.fail(stage, start, reason, detail) from exc
        self.stages.append(StageResult(stage, True, time.monotonic() - start))
        return value

    def fail(self, stage: Stage, start: float, reason: Reason, detail: str) -> _StageFailed:
        result = StageResult(stage, False, time.monotonic() - start, reason, detail)
        self.stages.append(result)
        return _StageFailed(result)


def classify(exc: BaseException) -> tuple[Reason, str]:
    """The reason family and a short detail for an error raised during a probe."""
    if isinstance(exc, RpcTimeout | TimeoutError):
        return Reason.TIMEOUT, str(exc) or "timeout"
    if isinstance(exc, RpcConnectionError):
        return Reason.REFUSED, str(exc)
    if isinstance(exc, ProtocolStatusError):
        return Reason.STATUS, exc.name
    if isinstance(exc, XdrError):
        return Reason.MALFORMED, str(exc)
    if isinstance(exc, RpcAcceptError | RpcRejected):
        return Reason.RPC_ERROR, str(exc)
    return Reason.RPC_ERROR, str(exc) or type(exc).__name__


class Prober:
    """Probes exports again and again, keeping its connections between probes.

    A monitor that probes every second should not pay three TCP handshakes each time:
    connections (portmapper, mountd, nfs per server) are kept and reused. A reused
    connection that the server closed meanwhile is reopened once within the same probe,
    so an idle-timeout close never reads as an outage; any other failure drops the
    server's connections, and the next probe starts from a fresh connect.
    """

    def __init__(
        self, *, timeout: float = 2.0, keep: bool = True, portmap_port: int = PMAP_PORT
    ) -> None:
        self.timeout = timeout
        self.keep = keep
        self.portmap_port = portmap_port
        self._pool: dict[tuple[str, int, int], ProgramClient] = {}

    async def probe(self, export: Export | str, *, check_write: bool = False) -> ProbeResult:
        """Probe one export; returns by the deadline (plus scheduling slack), never raises."""
        target = export if isinstance(export, Export) else Export.parse(export)
        start = time.monotonic()
        walk = _Walk(deadline=start + self.timeout, timeout=self.timeout)
        writable: bool | None = None
        try:
            mount_port, nfs_port = await self._ports(walk, target.host)
            fhandle = await self._mount(walk, target, mount_port)
            writable = await self._nfs(walk, target.host, nfs_port, fhandle, check_write)
        except _StageFailed:
            await self._drop(target.host)
        finally:
            if not self.keep:
                await self.close()
        failed = any(not s.ok for s in walk.stages)
        return ProbeResult(
            export=str(target),
            up=not failed,
            stages=tuple(walk.stages),
            latency_s=time.monotonic() - start,
            writable=None if failed else writable,
        )

    async def close(self) -> None:
        pool, self._pool = self._pool, {}
        for client in pool.values():
            await client.close()

    async def __aenter__(self) -> Prober:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _drop(self, host: str) -> None:
        for key in [k for k in self._pool if k[0] == host]:
            await self._pool.pop(key).close()

    async def _client(
        self,
        walk: _Walk,
        stage: Stage,
        key: tuple[str, int, int],
        opening: Callable[[], Awaitable[C]],
    ) -> tuple[C, bool]:
        """The pooled client for ``key`` (reused=True), or a new one connected in ``stage``."""
        client = self._pool.get(key)
        if client is not None and not client.rpc.closed:
            return client, True  # type: ignore[return-value]
        client = await walk.stage(stage, opening())
        self._pool[key] = client
        return client, False

    async def _with_client(
        self,
        walk: _Walk,
        stages: tuple[Stage, Stage],
        key: tuple[str, int, int],
        opening: Callable[[], Awaitable[C]],
        action: Callable[[C], Awaitable[T]],
    ) -> T:
        """Connect (or reuse) in the first stage, run ``action`` in the second.

        A reused connection found closed by the server is reopened once. For mountd and
        nfs the NULL call rides in the same pipelined batch as MNT or GETATTR, so a
        program that does not answer at all fails the first stage, and only the
        program's own status (MNT3ERR_*, NFS3ERR_*) fails the second.
        """
        for _ in range(2):
            client, reused = await self._client(walk, stages[0], key, opening)
            if reused:
                walk.stages.append(StageResult(stages[0], True, 0.0, detail="reused"))
            mark = len(walk.stages)
            try:
                return await walk.stage(stages[1], action(client))
            except _StageFailed as failed:
                reason = failed.result.reason
                if reused and reason is Reason.REFUSED:
                    del walk.stages[mark - 1 :]
                    await self._pool.pop(key).close()
                    continue
                if stages[0] is Stage.PORTMAP or reason is Reason.STATUS:
                    raise
                connected = walk.stages[mark - 1]
                blamed = replace(
                    failed.result,
                    stage=stages[0],
                    latency_s=connected.latency_s + failed.result.latency_s,
                )
                walk.stages[mark - 1 :] = [blamed]
                raise _StageFailed(blamed) from failed
        raise AssertionError("unreachable: the second attempt uses a fresh connection")

    async def _ports(self, walk: _Walk, host: str) -> tuple[int, int]:
        async def getports(pmap: PortmapClient) -> tuple[int, int]:
            mount, nfs = await pmap.getports(
                [(MOUNT_PROGRAM, MOUNT_VERSION), (NFS_PROGRAM, NFS_VERSION)],
                timeout=walk.remaining(),
            )
            return mount, nfs

        ports = await self._with_client(
            walk,
            (Stage.PORTMAP, Stage.GETPORT),
            (host, self.portmap_port, PMAP_PROGRAM),
            lambda: PortmapClient.connect(host, port=self.portmap_port, timeout=walk.remaining()),
            getports,
        )
        for name, port in zip(("mountd", "nfs"), ports, strict=True):
            if port == 0:
                walk.stages.pop()
                raise walk.fail(
                    Stage.GETPORT,
                    time.monotonic(),
                    Reason.NOT_REGISTERED,
                    f"{name} v3 over TCP is not registered with the portmapper",
                )
        return ports

    async def _mount(self, walk: _Walk, target: Export, port: int) -> bytes:
        async def null_mnt(mountd: MountClient) -> bytes:
            return (await mountd.null_mnt(target.path, timeout=walk.remaining())).fhandle

        return await self._with_client(
            walk,
            (Stage.MOUNTD, Stage.MNT),
            (target.host, port, MOUNT_PROGRAM),
            lambda: MountClient.connect(target.host, port, timeout=walk.remaining()),
            null_mnt,
        )

    async def _nfs(
        self, walk: _Walk, host: str, port: int, fhandle: bytes, check_write: bool
    ) -> bool | None:
        async def null_getattr(nfs: Nfs3Client) -> Nfs3Client:
            await nfs.null_getattr(fhandle, timeout=walk.remaining())
            return nfs

        nfs = await self._with_client(
            walk,
            (Stage.NFS, Stage.GETATTR),
            (host, port, NFS_PROGRAM),
            lambda: Nfs3Client.connect(host, port, timeout=walk.remaining(), auth=AuthSys()),
            null_getattr,
        )
        return await _write_check(walk, nfs, fhandle) if check_write else None


async def probe_export(
    export: Export | str, *, timeout: float = 2.0, check_write: bool = False
) -> ProbeResult:
    """Probe one export on fresh connections, closed afterwards."""
    return await Prober(timeout=timeout, keep=False).probe(export, check_write=check_write)


async def _write_check(walk: _Walk, nfs: Nfs3Client, root: bytes) -> bool:
    """Create, write and remove a small file: the only sure test that writes are taken."""
    name = f"{PROBE_FILE_PREFIX}-{os.getpid()}"
    try:
        await walk.stage(Stage.WRITE, _write_file(nfs, root, name, walk))
    except _StageFailed as failed:
        if failed.result.detail in ("NFS3ERR_ROFS", "NFS3ERR_ACCES", "NFS3ERR_PERM"):
            # A read-only export is up; it just does not take writes. Record that, not a failure.
            walk.stages[-1] = StageResult(
                Stage.WRITE, True, failed.result.latency_s, Reason.STATUS, failed.result.detail
            )
            return False
        raise
    return True


async def _write_file(nfs: Nfs3Client, root: bytes, name: str, walk: _Walk) -> None:
    fh = await nfs.create(root, name, timeout=walk.remaining())
    await nfs.write(fh, 0, b"nfs-failover probe\n", StableHow.FILE_SYNC, timeout=walk.remaining())
    await nfs.remove(root, name, timeout=walk.remaining())


async def probe_many(
    exports: list[Export | str], *, timeout: float = 2.0, check_write: bool = False
) -> list[ProbeResult]:
    """Probe several exports at once on fresh connections; takes about one deadline."""
    return list(
        await asyncio.gather(
            *(probe_export(e, timeout=timeout, check_write=check_write) for e in exports)
        )
    )
