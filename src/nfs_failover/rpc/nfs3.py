"""NFSv3 client (RFC 1813): the procedures the probes and the replication checks need.

Owns the calls and their arguments; the types, status names and decoders live in
``nfs3_xdr`` and are re-exported here, so callers import everything from this module.
"""

from __future__ import annotations

import os
from typing import Self

from nfs_failover.errors import XdrError
from nfs_failover.rpc.client import (
    DEFAULT_MAX_RECORD,
    NFS,
    Auth,
    AuthSys,
    ProgramClient,
    RpcClient,
    Transport,
)
from nfs_failover.rpc.nfs3_xdr import (
    ACCESS3_DELETE,
    ACCESS3_EXECUTE,
    ACCESS3_EXTEND,
    ACCESS3_LOOKUP,
    ACCESS3_MODIFY,
    ACCESS3_READ,
    NFS3_OK,
    NFS3_STATUS_NAMES,
    VERIFIER_SIZE,
    CreateMode,
    DirEntryPlus,
    Fattr3,
    FsInfo,
    Ftype3,
    NfsTime,
    ReaddirplusResult,
    ReadResult,
    Sattr3,
    StableHow,
    WccAttr,
    WccData,
    WriteResult,
    decode_access,
    decode_commit,
    decode_create,
    decode_fsinfo,
    decode_getattr,
    decode_lookup,
    decode_read,
    decode_readdirplus,
    decode_wcc_only,
    decode_write,
    nfs3_status_name,
    pack_diropargs,
    pack_fh,
    pack_sattr3,
)
from nfs_failover.rpc.xdr import MAX_OPAQUE, Packer

__all__ = [
    "ACCESS3_DELETE",
    "ACCESS3_EXECUTE",
    "ACCESS3_EXTEND",
    "ACCESS3_LOOKUP",
    "ACCESS3_MODIFY",
    "ACCESS3_READ",
    "NFS3_OK",
    "NFS3_STATUS_NAMES",
    "NFS_PROGRAM",
    "NFS_VERSION",
    "CreateMode",
    "DirEntryPlus",
    "Fattr3",
    "FsInfo",
    "Ftype3",
    "Nfs3Client",
    "NfsTime",
    "ReadResult",
    "ReaddirplusResult",
    "Sattr3",
    "StableHow",
    "WccAttr",
    "WccData",
    "WriteResult",
    "nfs3_status_name",
]

NFS_PROGRAM = NFS
NFS_VERSION = 3
NFS_PORT = 2049

NFSPROC3_NULL = 0
NFSPROC3_GETATTR = 1
NFSPROC3_LOOKUP = 3
NFSPROC3_ACCESS = 4
NFSPROC3_READ = 6
NFSPROC3_WRITE = 7
NFSPROC3_CREATE = 8
NFSPROC3_MKDIR = 9
NFSPROC3_REMOVE = 12
NFSPROC3_RMDIR = 13
NFSPROC3_READDIRPLUS = 17
NFSPROC3_FSINFO = 19
NFSPROC3_COMMIT = 21

DEFAULT_DIRCOUNT = 16384
DEFAULT_MAXCOUNT = 65536
MAX_LISTDIR_PAGES = 4096
ZERO_VERIFIER = b"\0" * VERIFIER_SIZE


def _fh_args(fh: bytes) -> Packer:
    p = Packer()
    pack_fh(p, fh)
    return p


def _dirop_args(dir_fh: bytes, name: str | bytes) -> Packer:
    p = Packer()
    pack_diropargs(p, dir_fh, name)
    return p


class Nfs3Client(ProgramClient):
    """NFSv3 over one persistent connection; ``timeout`` is the default deadline per call.

    File names are ``str`` (undecodable bytes as surrogate escapes) or raw ``bytes``.
    """

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int = NFS_PORT,
        *,
        timeout: float,
        transport: Transport = "tcp",
        auth: Auth | None = None,
        max_record: int = DEFAULT_MAX_RECORD,
    ) -> Self:
        """``auth`` defaults to AUTH_SYS uid 0 / gid 0 (the lab exports No_Root_Squash)."""
        rpc = await RpcClient.connect(
            host,
            port,
            NFS,
            NFS_VERSION,
            transport=transport,
            timeout=timeout,
            auth=AuthSys() if auth is None else auth,
            max_record=max_record,
        )
        return cls(rpc, timeout)

    async def null(self, *, timeout: float | None = None) -> None:
        await self._call(NFSPROC3_NULL, timeout=timeout)

    async def getattr(self, fh: bytes, *, timeout: float | None = None) -> Fattr3:
        u = await self._call(NFSPROC3_GETATTR, _fh_args(fh).getvalue(), timeout)
        return decode_getattr(u)

    async def null_getattr(self, fh: bytes, *, timeout: float | None = None) -> Fattr3:
        """NULL then GETATTR, one round trip on TCP (``RpcClient.call_many``, whose error
        rules apply); a non-OK status raises ProtocolStatusError as ``getattr`` does."""
        calls = [(NFSPROC3_NULL, b""), (NFSPROC3_GETATTR, _fh_args(fh).getvalue())]
        _, getattr_reply = await self._call_many(calls, timeout)
        return decode_getattr(getattr_reply)

    async def lookup(
        self, dir_fh: bytes, name: str | bytes, *, timeout: float | None = None
    ) -> tuple[bytes, Fattr3 | None]:
        u = await self._call(NFSPROC3_LOOKUP, _dirop_args(dir_fh, name).getvalue(), timeout)
        return decode_lookup(u)

    async def access(self, fh: bytes, mask: int, *, timeout: float | None = None) -> int:
        """The subset of ``mask`` (ACCESS3_* bits) the server grants."""
        p = _fh_args(fh)
        p.pack_uint(mask)
        return decode_access(await self._call(NFSPROC3_ACCESS, p.getvalue(), timeout))

    async def read(
        self, fh: bytes, offset: int, count: int, *, timeout: float | None = None
    ) -> ReadResult:
        p = _fh_args(fh)
        p.pack_uhyper(offset)
        p.pack_uint(count)
        u = await self._call(NFSPROC3_READ, p.getvalue(), timeout)
        return decode_read(u, min(count, MAX_OPAQUE))

    async def write(
        self,
        fh: bytes,
        offset: int,
        data: bytes,
        stable: StableHow = StableHow.FILE_SYNC,
        *,
        timeout: float | None = None,
    ) -> WriteResult:
        """Writes ``data`` at ``offset``; FILE_SYNC by default so a failover loses nothing
        the server acknowledged. The server may write less: check ``count``."""
        p = _fh_args(fh)
        p.pack_uhyper(offset)
        p.pack_uint(len(data))
        p.pack_uint(stable)
        p.pack_opaque(data, MAX_OPAQUE)
        return decode_write(await self._call(NFSPROC3_WRITE, p.getvalue(), timeout))

    async def create(
        self,
        dir_fh: bytes,
        name: str | bytes,
        *,
        mode: CreateMode = CreateMode.UNCHECKED,
        attrs: Sattr3 | None = None,
        verifier: bytes | None = None,
        timeout: float | None = None,
    ) -> bytes:
        """Creates a regular file and returns its handle (looked up if the server sent none).

        UNCHECKED/GUARDED set ``attrs`` (default mode 0o644); EXCLUSIVE uses ``verifier``
        (8 bytes, random by default) to make a retransmitted create idempotent.
        """
        p = _dirop_args(dir_fh, name)
        p.pack_uint(mode)
        if mode == CreateMode.EXCLUSIVE:
            p.pack_fopaque(
                VERIFIER_SIZE, os.urandom(VERIFIER_SIZE) if verifier is None else verifier
            )
        else:
            pack_sattr3(p, Sattr3(mode=0o644) if attrs is None else attrs)
        fh = decode_create(await self._call(NFSPROC3_CREATE, p.getvalue(), timeout))
        return fh if fh is not None else (await self.lookup(dir_fh, name, timeout=timeout))[0]

    async def mkdir(
        self, dir_fh: bytes, name: str | bytes, mode: int = 0o755, *, timeout: float | None = None
    ) -> bytes:
        p = _dirop_args(dir_fh, name)
        pack_sattr3(p, Sattr3(mode=mode))
        fh = decode_create(await self._call(NFSPROC3_MKDIR, p.getvalue(), timeout), "MKDIR")
        return fh if fh is not None else (await self.lookup(dir_fh, name, timeout=timeout))[0]

    async def remove(
        self, dir_fh: bytes, name: str | bytes, *, timeout: float | None = None
    ) -> None:
        u = await self._call(NFSPROC3_REMOVE, _dirop_args(dir_fh, name).getvalue(), timeout)
        decode_wcc_only(u, "REMOVE")

    async def rmdir(
        self, dir_fh: bytes, name: str | bytes, *, timeout: float | None = None
    ) -> None:
        u = await self._call(NFSPROC3_RMDIR, _dirop_args(dir_fh, name).getvalue(), timeout)
        decode_wcc_only(u, "RMDIR")

    async def readdirplus(
        self,
        dir_fh: bytes,
        cookie: int = 0,
        cookieverf: bytes = ZERO_VERIFIER,
        dircount: int = DEFAULT_DIRCOUNT,
        maxcount: int = DEFAULT_MAXCOUNT,
        *,
        timeout: float | None = None,
    ) -> ReaddirplusResult:
        """One page of entries with attributes and handles, starting after ``cookie``."""
        p = _fh_args(dir_fh)
        p.pack_uhyper(cookie)
        p.pack_fopaque(VERIFIER_SIZE, cookieverf)
        p.pack_uint(dircount)
        p.pack_uint(maxcount)
        return decode_readdirplus(await self._call(NFSPROC3_READDIRPLUS, p.getvalue(), timeout))

    async def listdir(
        self, dir_fh: bytes, *, max_pages: int = MAX_LISTDIR_PAGES, timeout: float | None = None
    ) -> list[DirEntryPlus]:
        """Every entry but "." and "..", paging until eof; ``timeout`` applies per page.

        A page with no entries and no eof, or more than ``max_pages`` pages, is a server
        that would keep us paging forever: XdrError.
        """
        entries: list[DirEntryPlus] = []
        cookie, cookieverf = 0, ZERO_VERIFIER
        for _ in range(max_pages):
            page = await self.readdirplus(dir_fh, cookie, cookieverf, timeout=timeout)
            entries.extend(e for e in page.entries if e.name not in (".", ".."))
            if page.eof:
                return entries
            if not page.entries:
                raise XdrError("READDIRPLUS: a page with no entries and no eof")
            cookie, cookieverf = page.entries[-1].cookie, page.cookieverf
        raise XdrError(f"READDIRPLUS: directory did not end within {max_pages} pages")

    async def fsinfo(self, fh: bytes, *, timeout: float | None = None) -> FsInfo:
        return decode_fsinfo(await self._call(NFSPROC3_FSINFO, _fh_args(fh).getvalue(), timeout))

    async def commit(
        self, fh: bytes, offset: int = 0, count: int = 0, *, timeout: float | None = None
    ) -> bytes:
        """Flushes unstable writes; returns the write verifier (a change means a reboot)."""
        p = _fh_args(fh)
        p.pack_uhyper(offset)
        p.pack_uint(count)
        return decode_commit(await self._call(NFSPROC3_COMMIT, p.getvalue(), timeout))
