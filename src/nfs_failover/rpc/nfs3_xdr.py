"""NFSv3 (RFC 1813) data types, status names, argument encoders and result decoders.

Pure functions over ``Packer``/``Unpacker``, so hand-built replies can test them without
a server; ``nfs3.Nfs3Client`` puts them on the wire. Non-OK statuses raise
``ProtocolStatusError``; the error-case bodies (attributes, wcc data) are not decoded.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

from nfs_failover.errors import ProtocolStatusError, XdrError
from nfs_failover.rpc.xdr import MAX_FHANDLE, MAX_STRING, Packer, Unpacker

NFS3_OK = 0
NFS3_STATUS_NAMES = {
    0: "NFS3_OK",
    1: "NFS3ERR_PERM",
    2: "NFS3ERR_NOENT",
    5: "NFS3ERR_IO",
    6: "NFS3ERR_NXIO",
    13: "NFS3ERR_ACCES",
    17: "NFS3ERR_EXIST",
    18: "NFS3ERR_XDEV",
    19: "NFS3ERR_NODEV",
    20: "NFS3ERR_NOTDIR",
    21: "NFS3ERR_ISDIR",
    22: "NFS3ERR_INVAL",
    27: "NFS3ERR_FBIG",
    28: "NFS3ERR_NOSPC",
    30: "NFS3ERR_ROFS",
    31: "NFS3ERR_MLINK",
    63: "NFS3ERR_NAMETOOLONG",
    66: "NFS3ERR_NOTEMPTY",
    69: "NFS3ERR_DQUOT",
    70: "NFS3ERR_STALE",
    71: "NFS3ERR_REMOTE",
    10001: "NFS3ERR_BADHANDLE",
    10002: "NFS3ERR_NOT_SYNC",
    10003: "NFS3ERR_BAD_COOKIE",
    10004: "NFS3ERR_NOTSUPP",
    10005: "NFS3ERR_TOOSMALL",
    10006: "NFS3ERR_SERVERFAULT",
    10007: "NFS3ERR_BADTYPE",
    10008: "NFS3ERR_JUKEBOX",
}

VERIFIER_SIZE = 8  # cookieverf3, createverf3, writeverf3
MAX_DIR_ENTRIES = 16384  # per READDIRPLUS page; a 1 MiB record cannot honestly hold more

ACCESS3_READ = 0x01
ACCESS3_LOOKUP = 0x02
ACCESS3_MODIFY = 0x04
ACCESS3_EXTEND = 0x08
ACCESS3_DELETE = 0x10
ACCESS3_EXECUTE = 0x20

# type, mode, nlink, uid, gid, size, used, rdev(2), fsid, fileid, atime, mtime, ctime
_FATTR3 = struct.Struct(">IIIIIQQIIQQIIIIII")
_WCC_ATTR = struct.Struct(">QIIII")  # size, mtime, ctime
# rtmax, rtpref, rtmult, wtmax, wtpref, wtmult, dtpref, maxfilesize, time_delta, properties
_FSINFO = struct.Struct(">IIIIIIIQIII")


class Ftype3(IntEnum):
    REG = 1
    DIR = 2
    BLK = 3
    CHR = 4
    LNK = 5
    SOCK = 6
    FIFO = 7


class StableHow(IntEnum):
    UNSTABLE = 0
    DATA_SYNC = 1
    FILE_SYNC = 2


class CreateMode(IntEnum):
    UNCHECKED = 0
    GUARDED = 1
    EXCLUSIVE = 2


@dataclass(frozen=True, slots=True)
class NfsTime:
    seconds: int
    nseconds: int

    def as_float(self) -> float:
        return self.seconds + self.nseconds / 1e9


@dataclass(frozen=True, slots=True)
class Fattr3:
    type: Ftype3
    mode: int
    nlink: int
    uid: int
    gid: int
    size: int
    used: int
    rdev: tuple[int, int]
    fsid: int
    fileid: int
    atime: NfsTime
    mtime: NfsTime
    ctime: NfsTime


@dataclass(frozen=True, slots=True)
class WccAttr:
    size: int
    mtime: NfsTime
    ctime: NfsTime


@dataclass(frozen=True, slots=True)
class WccData:
    """Weak cache consistency: attributes before (partial) and after an operation."""

    before: WccAttr | None
    after: Fattr3 | None


@dataclass(frozen=True, slots=True)
class Sattr3:
    """Attributes to set; None leaves one unchanged, "server" means the server's clock."""

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    atime: NfsTime | Literal["server"] | None = None
    mtime: NfsTime | Literal["server"] | None = None


@dataclass(frozen=True, slots=True)
class ReadResult:
    data: bytes
    eof: bool
    attrs: Fattr3 | None


@dataclass(frozen=True, slots=True)
class WriteResult:
    count: int
    committed: StableHow
    verifier: bytes
    wcc: WccData


@dataclass(frozen=True, slots=True)
class DirEntryPlus:
    name: str
    fileid: int
    cookie: int
    attrs: Fattr3 | None
    fh: bytes | None


@dataclass(frozen=True, slots=True)
class ReaddirplusResult:
    entries: tuple[DirEntryPlus, ...]
    eof: bool
    cookieverf: bytes
    dir_attrs: Fattr3 | None


@dataclass(frozen=True, slots=True)
class FsInfo:
    rtmax: int
    rtpref: int
    rtmult: int
    wtmax: int
    wtpref: int
    wtmult: int
    dtpref: int
    maxfilesize: int
    time_delta: NfsTime
    properties: int
    attrs: Fattr3 | None


def nfs3_status_name(status: int) -> str:
    return NFS3_STATUS_NAMES.get(status, f"NFS3ERR_UNKNOWN_{status}")


def check_status(u: Unpacker, procedure: str) -> None:
    """Reads the nfsstat3; anything but NFS3_OK raises ProtocolStatusError."""
    status = u.unpack_uint()
    if status != NFS3_OK:
        raise ProtocolStatusError(nfs3_status_name(status), status, procedure)


# --- encoders ---------------------------------------------------------------------------


def pack_fh(p: Packer, fh: bytes) -> None:
    p.pack_opaque(fh, MAX_FHANDLE)


def pack_diropargs(p: Packer, dir_fh: bytes, name: str | bytes) -> None:
    pack_fh(p, dir_fh)
    p.pack_string(name, MAX_STRING)


def _pack_set_time(p: Packer, value: NfsTime | Literal["server"] | None) -> None:
    if value is None:
        p.pack_uint(0)  # DONT_CHANGE
    elif value == "server":
        p.pack_uint(1)  # SET_TO_SERVER_TIME
    else:
        p.pack_uint(2)  # SET_TO_CLIENT_TIME
        p.pack_uint(value.seconds)
        p.pack_uint(value.nseconds)


def pack_sattr3(p: Packer, attrs: Sattr3) -> None:
    for value in (attrs.mode, attrs.uid, attrs.gid):
        p.pack_bool(value is not None)
        if value is not None:
            p.pack_uint(value)
    p.pack_bool(attrs.size is not None)
    if attrs.size is not None:
        p.pack_uhyper(attrs.size)
    _pack_set_time(p, attrs.atime)
    _pack_set_time(p, attrs.mtime)


# --- decoders ---------------------------------------------------------------------------


def decode_fattr3(u: Unpacker) -> Fattr3:
    f = u.unpack_struct(_FATTR3)
    try:
        ftype = Ftype3(f[0])
    except ValueError:
        raise XdrError(f"unknown file type {f[0]}") from None
    return Fattr3(
        ftype,
        f[1],
        f[2],
        f[3],
        f[4],
        f[5],
        f[6],
        (f[7], f[8]),
        f[9],
        f[10],
        NfsTime(f[11], f[12]),
        NfsTime(f[13], f[14]),
        NfsTime(f[15], f[16]),
    )


def decode_post_op_attr(u: Unpacker) -> Fattr3 | None:
    return decode_fattr3(u) if u.unpack_bool() else None


def decode_post_op_fh(u: Unpacker) -> bytes | None:
    return u.unpack_opaque(MAX_FHANDLE) if u.unpack_bool() else None


def decode_wcc_data(u: Unpacker) -> WccData:
    before = None
    if u.unpack_bool():
        size, ms, mns, cs, cns = u.unpack_struct(_WCC_ATTR)
        before = WccAttr(size, NfsTime(ms, mns), NfsTime(cs, cns))
    return WccData(before, decode_post_op_attr(u))


def decode_getattr(u: Unpacker) -> Fattr3:
    check_status(u, "GETATTR")
    return decode_fattr3(u)


def decode_lookup(u: Unpacker) -> tuple[bytes, Fattr3 | None]:
    check_status(u, "LOOKUP")
    fh = u.unpack_opaque(MAX_FHANDLE)
    attrs = decode_post_op_attr(u)
    decode_post_op_attr(u)  # the directory's attributes: not needed
    return fh, attrs


def decode_access(u: Unpacker) -> int:
    check_status(u, "ACCESS")
    decode_post_op_attr(u)
    return u.unpack_uint()


def decode_read(u: Unpacker, count: int) -> ReadResult:
    """READ results; more data than the ``count`` asked for is a malformed reply."""
    check_status(u, "READ")
    attrs = decode_post_op_attr(u)
    u.unpack_uint()  # count: the opaque's own length is what we trust
    eof = u.unpack_bool()
    return ReadResult(u.unpack_opaque(count), eof, attrs)


def decode_write(u: Unpacker) -> WriteResult:
    check_status(u, "WRITE")
    wcc = decode_wcc_data(u)
    count, committed = u.unpack_uint(), u.unpack_uint()
    if committed > StableHow.FILE_SYNC:
        raise XdrError(f"WRITE: unknown stable_how {committed}")
    return WriteResult(count, StableHow(committed), u.unpack_fopaque(VERIFIER_SIZE), wcc)


def decode_create(u: Unpacker, procedure: str = "CREATE") -> bytes | None:
    """CREATE and MKDIR results: the new handle, or None if the server sent none."""
    check_status(u, procedure)
    fh = decode_post_op_fh(u)
    decode_post_op_attr(u)
    decode_wcc_data(u)
    return fh


def decode_wcc_only(u: Unpacker, procedure: str) -> WccData:
    """REMOVE and RMDIR results: only the directory's wcc data."""
    check_status(u, procedure)
    return decode_wcc_data(u)


def _decode_entryplus(u: Unpacker) -> DirEntryPlus:
    fileid = u.unpack_uhyper()
    name = u.unpack_string(MAX_STRING)
    cookie = u.unpack_uhyper()
    return DirEntryPlus(name, fileid, cookie, decode_post_op_attr(u), decode_post_op_fh(u))


def decode_readdirplus(u: Unpacker, max_entries: int = MAX_DIR_ENTRIES) -> ReaddirplusResult:
    check_status(u, "READDIRPLUS")
    dir_attrs = decode_post_op_attr(u)
    cookieverf = u.unpack_fopaque(VERIFIER_SIZE)
    entries = u.unpack_list(lambda: _decode_entryplus(u), max_entries)
    return ReaddirplusResult(tuple(entries), u.unpack_bool(), cookieverf, dir_attrs)


def decode_fsinfo(u: Unpacker) -> FsInfo:
    check_status(u, "FSINFO")
    attrs = decode_post_op_attr(u)
    f = u.unpack_struct(_FSINFO)
    rt, rtpref, rtmult, wt, wtpref, wtmult, dtpref, maxsize, delta_s, delta_ns, props = f
    return FsInfo(
        rt,
        rtpref,
        rtmult,
        wt,
        wtpref,
        wtmult,
        dtpref,
        maxsize,
        NfsTime(delta_s, delta_ns),
        props,
        attrs,
    )


def decode_commit(u: Unpacker) -> bytes:
    check_status(u, "COMMIT")
    decode_wcc_data(u)
    return u.unpack_fopaque(VERIFIER_SIZE)
