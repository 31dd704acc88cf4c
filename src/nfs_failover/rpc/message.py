"""ONC RPC v2 (RFC 5531) messages: program numbers, status codes, credentials, replies.

Owns the constants, the AUTH_NONE and AUTH_SYS credentials we send, and ``decode_reply``,
which turns a reply message into results or a typed error. No sockets here.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field

from nfs_failover.errors import RpcAcceptError, RpcError, RpcRejected, XdrError
from nfs_failover.rpc.xdr import Packer, Unpacker

PMAP = 100000
NFS = 100003
MOUNT = 100005

RPC_VERSION = 2
CALL = 0
REPLY = 1
MSG_ACCEPTED = 0
MSG_DENIED = 1

SUCCESS = 0
PROG_UNAVAIL = 1
PROG_MISMATCH = 2
PROC_UNAVAIL = 3
GARBAGE_ARGS = 4
SYSTEM_ERR = 5
ACCEPT_STAT_NAMES = {
    SUCCESS: "SUCCESS",
    PROG_UNAVAIL: "PROG_UNAVAIL",
    PROG_MISMATCH: "PROG_MISMATCH",
    PROC_UNAVAIL: "PROC_UNAVAIL",
    GARBAGE_ARGS: "GARBAGE_ARGS",
    SYSTEM_ERR: "SYSTEM_ERR",
}

RPC_MISMATCH = 0
AUTH_ERROR = 1
AUTH_STAT_NAMES = {
    0: "AUTH_OK",
    1: "AUTH_BADCRED",
    2: "AUTH_REJECTEDCRED",
    3: "AUTH_BADVERF",
    4: "AUTH_REJECTEDVERF",
    5: "AUTH_TOOWEAK",
    6: "AUTH_INVALIDRESP",
    7: "AUTH_FAILED",
    8: "AUTH_KERB_GENERIC",
    9: "AUTH_TIMEEXPIRE",
    10: "AUTH_TKT_FILE",
    11: "AUTH_DECODE",
    12: "AUTH_NET_ADDR",
    13: "RPCSEC_GSS_CREDPROBLEM",
    14: "RPCSEC_GSS_CTXPROBLEM",
}

AUTH_NONE = 0
AUTH_SYS = 1
MAX_AUTH_BYTES = 400

AUTH_NONE_BYTES = b"\0" * 8  # flavour AUTH_NONE, empty body: also our verifier


def _stamp() -> int:
    return int(time.time()) & 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class AuthNone:
    """AUTH_NONE: enough for NULL calls, the portmapper and most MOUNT servers."""

    def credential(self) -> bytes:
        return AUTH_NONE_BYTES


@dataclass(frozen=True, slots=True)
class AuthSys:
    """AUTH_SYS (RFC 5531 appendix A): a claimed uid/gid, what NFSv3 servers check."""

    uid: int = 0
    gid: int = 0
    gids: tuple[int, ...] = ()
    machinename: str = "nfs-failover"
    stamp: int = field(default_factory=_stamp)

    def credential(self) -> bytes:
        body = Packer()
        body.pack_uint(self.stamp)
        body.pack_string(self.machinename, 255)
        body.pack_uint(self.uid)
        body.pack_uint(self.gid)
        body.pack_array(self.gids, body.pack_uint, 16)
        cred = Packer()
        cred.pack_uint(AUTH_SYS)
        cred.pack_opaque(body.getvalue(), MAX_AUTH_BYTES)
        return cred.getvalue()


Auth = AuthNone | AuthSys


_SUCCESS_HEADER = struct.pack(">5I", REPLY, MSG_ACCEPTED, AUTH_NONE, 0, SUCCESS)


def decode_reply(record: bytes, xid: int, context: str = "RPC") -> Unpacker:
    """Checks a reply message and returns an Unpacker positioned at the results.

    Raises XdrError (malformed or another call's reply), RpcRejected (MSG_DENIED) or
    RpcAcceptError (accepted but not run).
    """
    if record[4:24] == _SUCCESS_HEADER and int.from_bytes(record[:4], "big") == xid:
        # The usual reply (accepted, empty AUTH_NONE verifier, SUCCESS) in one comparison:
        # a monitor decodes thousands a second.
        return Unpacker(memoryview(record)[24:])
    u = Unpacker(record)
    reply_xid = u.unpack_uint()
    if reply_xid != xid:
        raise XdrError(f"{context}: reply xid {reply_xid:#010x} is not the call's {xid:#010x}")
    msg_type = u.unpack_uint()
    if msg_type != REPLY:
        raise XdrError(f"{context}: message type {msg_type} where a REPLY was expected")
    reply_stat = u.unpack_uint()
    if reply_stat == MSG_ACCEPTED:
        _check_accepted(u, context)
        return u
    if reply_stat == MSG_DENIED:
        raise _rejection(u, context)
    raise XdrError(f"{context}: unknown reply_stat {reply_stat}")


def _check_accepted(u: Unpacker, context: str) -> None:
    u.unpack_uint()  # verifier flavour: AUTH_NONE and AUTH_SYS give nothing to verify
    u.unpack_opaque(MAX_AUTH_BYTES)
    stat = u.unpack_uint()
    if stat == SUCCESS:
        return
    name = ACCEPT_STAT_NAMES.get(stat)
    if name is None:
        raise XdrError(f"{context}: unknown accept_stat {stat}")
    if stat == PROG_MISMATCH:
        low, high = u.unpack_uint(), u.unpack_uint()
        name = f"PROG_MISMATCH (server supports versions {low} to {high})"
    raise RpcAcceptError(f"{context}: {name}", stat)


def _rejection(u: Unpacker, context: str) -> RpcError:
    stat = u.unpack_uint()
    if stat == RPC_MISMATCH:
        low, high = u.unpack_uint(), u.unpack_uint()
        return RpcRejected(f"{context}: RPC_MISMATCH (server supports RPC {low} to {high})")
    if stat == AUTH_ERROR:
        auth_stat = u.unpack_uint()
        name = AUTH_STAT_NAMES.get(auth_stat, f"auth_stat {auth_stat}")
        return RpcRejected(f"{context}: AUTH_ERROR {name}")
    return XdrError(f"{context}: unknown reject_stat {stat}")
