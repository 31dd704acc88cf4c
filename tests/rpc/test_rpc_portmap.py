"""Portmapper v2: GETPORT and DUMP on the wire and from hand-built replies."""

from __future__ import annotations

import struct

import pytest
from rpc_fake_server import (
    LOOPBACK,
    Answer,
    Call,
    TcpServer,
    accepted,
    answer_together,
    record,
    run,
    xdr,
)

from nfs_failover.errors import XdrError
from nfs_failover.rpc.client import MOUNT, NFS, PMAP
from nfs_failover.rpc.portmap import (
    IPPROTO_TCP,
    IPPROTO_UDP,
    Mapping,
    PortmapClient,
    decode_dump,
    decode_getport,
)
from nfs_failover.rpc.xdr import Packer, Unpacker

REGISTRY = [
    Mapping(PMAP, 2, IPPROTO_TCP, 111),
    Mapping(MOUNT, 3, IPPROTO_TCP, 635),
    Mapping(NFS, 3, IPPROTO_TCP, 2049),
    Mapping(NFS, 4, IPPROTO_TCP, 2049),
]


def _pack_mapping(p: Packer, m: Mapping) -> None:
    for value in (m.prog, m.vers, m.prot, m.port):
        p.pack_uint(value)


def rpcbind(call: Call) -> Answer:
    """A fake rpcbind that knows REGISTRY."""
    assert call.program == PMAP
    assert call.version == 2
    if call.procedure == 3:
        prog, vers, prot, _ = struct.unpack(">4I", call.args)
        port = next((m.port for m in REGISTRY if (m.prog, m.vers, m.prot) == (prog, vers, prot)), 0)
        return Answer(record(accepted(call.xid, struct.pack(">I", port))))
    if call.procedure == 4:
        return Answer(
            record(
                accepted(
                    call.xid, xdr(lambda p: p.pack_list(REGISTRY, lambda m: _pack_mapping(p, m)))
                )
            )
        )
    return Answer(record(accepted(call.xid)))


def test_getport_finds_registered_programs_and_gives_zero_for_others() -> None:
    async def scenario() -> list[int]:
        async with (
            TcpServer(rpcbind) as srv,
            await PortmapClient.connect(LOOPBACK, port=srv.port, timeout=2) as pmap,
        ):
            await pmap.null()
            return [
                await pmap.getport(MOUNT, 3),
                await pmap.getport(NFS, 3, IPPROTO_TCP),
                await pmap.getport(NFS, 3, IPPROTO_UDP),
            ]

    assert run(scenario()) == [635, 2049, 0]


def test_dump_lists_every_mapping() -> None:
    async def scenario() -> list[Mapping]:
        async with (
            TcpServer(rpcbind) as srv,
            await PortmapClient.connect(LOOPBACK, port=srv.port, timeout=2) as pmap,
        ):
            return await pmap.dump(timeout=1)

    assert run(scenario()) == REGISTRY


def test_an_empty_dump_is_an_empty_list() -> None:
    assert decode_dump(Unpacker(struct.pack(">I", 0))) == []


def test_an_endless_dump_list_is_cut_off_at_its_bound() -> None:
    raw = struct.pack(">5I", 1, PMAP, 2, 6, 111) * 100 + struct.pack(">I", 0)
    with pytest.raises(XdrError, match="bound"):
        decode_dump(Unpacker(raw), max_count=50)


def test_a_truncated_dump_is_malformed() -> None:
    with pytest.raises(XdrError):
        decode_dump(Unpacker(struct.pack(">3I", 1, PMAP, 2)))


def test_a_port_beyond_65535_is_malformed() -> None:
    with pytest.raises(XdrError):
        decode_getport(Unpacker(struct.pack(">I", 70000)))


def test_getports_asks_for_every_pair_in_one_batch() -> None:
    async def scenario() -> tuple[list[int], list[int], list[Call]]:
        held = answer_together(3, lambda call: rpcbind(call).data, reverse=True)
        async with (
            TcpServer(held) as srv,
            await PortmapClient.connect(LOOPBACK, port=srv.port, timeout=2) as pmap,
        ):
            ports = await pmap.getports([(MOUNT, 3), (NFS, 3), (NFS, 4)])
            udp = await pmap.getports([(MOUNT, 3), (NFS, 3), (PMAP, 2)], IPPROTO_UDP, timeout=1)
            return ports, udp, srv.calls

    ports, udp, calls = run(scenario())
    assert ports == [635, 2049, 2049]
    assert udp == [0, 0, 0]
    assert [struct.unpack(">4I", c.args) for c in calls[:3]] == [
        (MOUNT, 3, IPPROTO_TCP, 0),
        (NFS, 3, IPPROTO_TCP, 0),
        (NFS, 4, IPPROTO_TCP, 0),
    ]
    assert {struct.unpack(">4I", c.args)[2] for c in calls[3:]} == {IPPROTO_UDP}


def test_getports_of_no_pairs_sends_nothing() -> None:
    async def scenario() -> tuple[list[int], list[Call]]:
        async with (
            TcpServer(rpcbind) as srv,
            await PortmapClient.connect(LOOPBACK, port=srv.port, timeout=2) as pmap,
        ):
            return await pmap.getports([]), srv.calls

    assert run(scenario()) == ([], [])
