"""Health probes: does an NFS export answer the way a client needs it to, right now?

A probe walks the stages a client walks (portmapper, GETPORT of mountd and nfs, NULL of
each, MNT of the export, GETATTR of its root handle, optionally a write) under one
deadline for the whole walk, and says which stage failed, why, and how long each took.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import asdict, dataclass, field
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
from nfs_failover.rpc.portmap import IPPROTO_TCP, PortmapClient

T = TypeVar("T")
C = TypeVar("C", bound=ProgramClient)

PROBE_FILE_PREFIX = ".nfs-failover-probe"


class Stage(StrEnum):
    """The stages of a probe, in the order a client needs them."""

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
    """The bookkeeping of one probe: a shared deadline and the stages done so far."""

    deadline: float
    timeout: float
    stages: list[StageResult] = field(default_factory=list)

    def remaining(self) -> float:
        return max(self.deadline - time.monotonic(), 0.0)

    async def stage(self, stage: Stage, work: Awaitable[T]) -> T:
        start = time.monotonic()
        try:
            async with asyncio.timeout(self.remaining()):
                value = await work
        except (RpcError, TimeoutError) as exc:
            reason, detail = classify(exc)
            if reason is Reason.TIMEOUT:
                detail = f"no answer within the probe's {self.timeout:g}s deadline"
            result = StageResult(stage, False, time.monotonic() - start, reason, detail)
            self.stages.append(result)
            raise _StageFailed(result) from exc
        self.stages.append(StageResult(stage, True, time.monotonic() - start))
        return value


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


async def probe_export(
    export: Export | str, *, timeout: float = 2.0, check_write: bool = False
) -> ProbeResult:
    """Probe one export; never takes longer than ``timeout`` (plus scheduling slack)."""
    target = export if isinstance(export, Export) else Export.parse(export)
    start = time.monotonic()
    walk = _Walk(deadline=start + timeout, timeout=timeout)
    writable: bool | None = None
    try:
        mount_port, nfs_port = await _ports(walk, target.host)
        fhandle = await _mount(walk, target, mount_port)
        writable = await _nfs(walk, target.host, nfs_port, fhandle, check_write)
    except _StageFailed:
        pass
    failed = any(not s.ok for s in walk.stages)
    return ProbeResult(
        export=str(target),
        up=not failed,
        stages=tuple(walk.stages),
        latency_s=time.monotonic() - start,
        writable=None if failed else writable,
    )


async def _ports(walk: _Walk, host: str) -> tuple[int, int]:
    async with _closing(
        walk.stage(Stage.PORTMAP, PortmapClient.connect(host, timeout=walk.remaining()))
    ) as pmap:
        mount_port, nfs_port = await walk.stage(
            Stage.GETPORT,
            asyncio.gather(
                pmap.getport(MOUNT_PROGRAM, MOUNT_VERSION, IPPROTO_TCP, timeout=walk.remaining()),
                pmap.getport(NFS_PROGRAM, NFS_VERSION, IPPROTO_TCP, timeout=walk.remaining()),
            ),
        )
    for name, port in (("mountd", mount_port), ("nfs", nfs_port)):
        if port == 0:
            result = StageResult(
                Stage.GETPORT,
                False,
                0.0,
                Reason.NOT_REGISTERED,
                f"{name} v3 over TCP is not registered with the portmapper",
            )
            walk.stages[-1] = result
            raise _StageFailed(result)
    return mount_port, nfs_port


async def _mount(walk: _Walk, target: Export, port: int) -> bytes:
    async with _closing(
        walk.stage(
            Stage.MOUNTD,
            _connected_null(MountClient.connect(target.host, port, timeout=walk.remaining()), walk),
        )
    ) as mountd:
        mounted = await walk.stage(Stage.MNT, mountd.mnt(target.path, timeout=walk.remaining()))
    return mounted.fhandle


async def _nfs(walk: _Walk, host: str, port: int, fhandle: bytes, check_write: bool) -> bool | None:
    async with _closing(
        walk.stage(
            Stage.NFS,
            _connected_null(
                Nfs3Client.connect(host, port, timeout=walk.remaining(), auth=AuthSys()), walk
            ),
        )
    ) as nfs:
        await walk.stage(Stage.GETATTR, nfs.getattr(fhandle, timeout=walk.remaining()))
        if not check_write:
            return None
        return await _write_check(walk, nfs, fhandle)


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


async def _connected_null(connecting: Awaitable[C], walk: _Walk) -> C:
    """Connect, then a NULL call: the program answers, not just the port."""
    client = await connecting
    try:
        await client.rpc.call(0, timeout=walk.remaining())
    except BaseException:
        await client.close()
        raise
    return client


@contextlib.asynccontextmanager
async def _closing(opening: Awaitable[C]) -> AsyncIterator[C]:
    client = await opening
    try:
        yield client
    finally:
        await client.close()


async def probe_many(
    exports: list[Export | str], *, timeout: float = 2.0, check_write: bool = False
) -> list[ProbeResult]:
    """Probe several exports at once; the whole batch takes about one deadline."""
    return list(
        await asyncio.gather(
            *(probe_export(e, timeout=timeout, check_write=check_write) for e in exports)
        )
    )
