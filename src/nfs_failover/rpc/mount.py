"""MOUNT v3 (RFC 1813 appendix I): NULL, MNT, UMNT and EXPORT.

Owns the MNT3ERR status names and the bounded decoding of the export list, whose
entries and group lists are XDR linked lists a hostile server could make endless.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

from nfs_failover.errors import ProtocolStatusError
from nfs_failover.rpc.client import MOUNT, Auth, AuthSys, ProgramClient, RpcClient, Transport
from nfs_failover.rpc.xdr import MAX_FHANDLE, Packer, Unpacker

MOUNT_PROGRAM = MOUNT
MOUNT_VERSION = 3
MNTPATHLEN = 1024
MNTNAMLEN = 255

MOUNTPROC3_NULL = 0
MOUNTPROC3_MNT = 1
MOUNTPROC3_UMNT = 3
MOUNTPROC3_EXPORT = 5

MNT3_OK = 0
MNT3_STATUS_NAMES = {
    0: "MNT3_OK",
    1: "MNT3ERR_PERM",
    2: "MNT3ERR_NOENT",
    5: "MNT3ERR_IO",
    13: "MNT3ERR_ACCES",
    20: "MNT3ERR_NOTDIR",
    22: "MNT3ERR_INVAL",
    63: "MNT3ERR_NAMETOOLONG",
    10004: "MNT3ERR_NOTSUPP",
    10006: "MNT3ERR_SERVERFAULT",
}

MAX_EXPORTS = 4096
MAX_GROUPS = 1024
MAX_AUTH_FLAVORS = 64


@dataclass(frozen=True, slots=True)
class MountResult:
    """The export's root file handle and the auth flavours the server accepts for it."""

    fhandle: bytes
    auth_flavors: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ExportEntry:
    """One exported path and the client groups (hosts, netgroups) allowed to mount it."""

    path: str
    groups: tuple[str, ...]


def mnt3_status_name(status: int) -> str:
    return MNT3_STATUS_NAMES.get(status, f"MNT3ERR_UNKNOWN_{status}")


def encode_dirpath(path: str | bytes) -> bytes:
    p = Packer()
    p.pack_string(path, MNTPATHLEN)
    return p.getvalue()


def decode_mnt(u: Unpacker) -> MountResult:
    """MNT results; a non-OK status raises ProtocolStatusError (procedure "MNT")."""
    status = u.unpack_uint()
    if status != MNT3_OK:
        raise ProtocolStatusError(mnt3_status_name(status), status, "MNT")
    fhandle = u.unpack_opaque(MAX_FHANDLE)
    flavors = u.unpack_array(u.unpack_uint, MAX_AUTH_FLAVORS)
    return MountResult(fhandle, tuple(flavors))


def decode_exports(
    u: Unpacker, max_exports: int = MAX_EXPORTS, max_groups: int = MAX_GROUPS
) -> list[ExportEntry]:
    def group() -> str:
        return u.unpack_string(MNTNAMLEN)

    def entry() -> ExportEntry:
        path = u.unpack_string(MNTPATHLEN)
        return ExportEntry(path, tuple(u.unpack_list(group, max_groups)))

    return u.unpack_list(entry, max_exports)


class MountClient(ProgramClient):
    """MOUNT v3 over one connection; ``timeout`` is the default deadline per call.

    The mountd port is not fixed (635 on ANF/ONTAP and in the lab): ask the portmapper.
    """

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        timeout: float,
        transport: Transport = "tcp",
        auth: Auth | None = None,
    ) -> Self:
        """``auth`` defaults to AUTH_SYS root, which servers with ``sec=sys`` expect."""
        rpc = await RpcClient.connect(
            host,
            port,
            MOUNT,
            MOUNT_VERSION,
            transport=transport,
            timeout=timeout,
            auth=AuthSys() if auth is None else auth,
        )
        return cls(rpc, timeout)

    async def null(self, *, timeout: float | None = None) -> None:
        await self._call(MOUNTPROC3_NULL, timeout=timeout)

    async def mnt(self, path: str | bytes, *, timeout: float | None = None) -> MountResult:
        return decode_mnt(await self._call(MOUNTPROC3_MNT, encode_dirpath(path), timeout))

    async def null_mnt(self, path: str | bytes, *, timeout: float | None = None) -> MountResult:
        """NULL then MNT, one round trip on TCP (``RpcClient.call_many``, whose error rules
        apply); a non-OK MNT status raises ProtocolStatusError as ``mnt`` does."""
        calls = [(MOUNTPROC3_NULL, b""), (MOUNTPROC3_MNT, encode_dirpath(path))]
        _, mnt = await self._call_many(calls, timeout)
        return decode_mnt(mnt)

    async def umnt(self, path: str | bytes, *, timeout: float | None = None) -> None:
        await self._call(MOUNTPROC3_UMNT, encode_dirpath(path), timeout)

    async def export(self, *, timeout: float | None = None) -> list[ExportEntry]:
        return decode_exports(await self._call(MOUNTPROC3_EXPORT, timeout=timeout))
