"""Portmapper v2 (RFC 1833): NULL, GETPORT and DUMP, the first stage of an NFS probe.

Owns the encoding of ``mapping`` arguments and the bounded decoding of the DUMP list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

from nfs_failover.errors import XdrError
from nfs_failover.rpc.client import PMAP, ProgramClient, RpcClient, Transport
from nfs_failover.rpc.xdr import Packer, Unpacker

PMAP_PROGRAM = PMAP
PMAP_VERSION = 2
PMAP_PORT = 111
IPPROTO_TCP = 6
IPPROTO_UDP = 17

PMAPPROC_NULL = 0
PMAPPROC_GETPORT = 3
PMAPPROC_DUMP = 4

# rpcbind on a busy host lists a few dozen mappings; thousands means a hostile answer.
MAX_MAPPINGS = 4096


@dataclass(frozen=True, slots=True)
class Mapping:
    """One registration: program ``prog`` version ``vers`` over ``prot`` listens on ``port``."""

    prog: int
    vers: int
    prot: int
    port: int


def encode_mapping(prog: int, vers: int, prot: int, port: int = 0) -> bytes:
    p = Packer()
    for value in (prog, vers, prot, port):
        p.pack_uint(value)
    return p.getvalue()


def decode_getport(u: Unpacker) -> int:
    """The port, 0 meaning "not registered"; a port over 65535 is a malformed reply."""
    port = u.unpack_uint()
    if port > 0xFFFF:
        raise XdrError(f"GETPORT returned port {port}")
    return port


def decode_dump(u: Unpacker, max_count: int = MAX_MAPPINGS) -> list[Mapping]:
    def one() -> Mapping:
        return Mapping(u.unpack_uint(), u.unpack_uint(), u.unpack_uint(), u.unpack_uint())

    return u.unpack_list(one, max_count)


class PortmapClient(ProgramClient):
    """Portmapper v2 over one connection; ``timeout`` is the default deadline per call."""

    @classmethod
    async def connect(
        cls, host: str, *, timeout: float, port: int = PMAP_PORT, transport: Transport = "tcp"
    ) -> Self:
        rpc = await RpcClient.connect(
            host, port, PMAP, PMAP_VERSION, transport=transport, timeout=timeout
        )
        return cls(rpc, timeout)

    async def null(self, *, timeout: float | None = None) -> None:
        await self._call(PMAPPROC_NULL, timeout=timeout)

    async def getport(
        self, prog: int, vers: int, prot: int = IPPROTO_TCP, *, timeout: float | None = None
    ) -> int:
        """The port of ``prog``/``vers`` over ``prot``; 0 means it is not registered."""
        u = await self._call(PMAPPROC_GETPORT, encode_mapping(prog, vers, prot), timeout)
        return decode_getport(u)

    async def getports(
        self,
        pairs: Sequence[tuple[int, int]],
        prot: int = IPPROTO_TCP,
        *,
        timeout: float | None = None,
    ) -> list[int]:
        """``getport`` of each ``(prog, vers)`` pair over ``prot``, in pair order; one round
        trip on TCP (``RpcClient.call_many``, whose error rules apply)."""
        calls = [(PMAPPROC_GETPORT, encode_mapping(prog, vers, prot)) for prog, vers in pairs]
        return [decode_getport(u) for u in await self._call_many(calls, timeout)]

    async def dump(self, *, timeout: float | None = None) -> list[Mapping]:
        return decode_dump(await self._call(PMAPPROC_DUMP, timeout=timeout))
