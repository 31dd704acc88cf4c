"""RpcClient over UDP: one datagram per call, retransmission, stale replies skipped."""

from __future__ import annotations

import socket
import struct
import time

import pytest
from rpc_fake_server import LOOPBACK, Call, UdpServer, accepted, closed_port, run

from nfs_failover.errors import RpcAcceptError, RpcConnectionError, RpcTimeout, XdrError
from nfs_failover.rpc.client import NFS, PROG_UNAVAIL, RpcClient, ping


async def _udp_call(srv: UdpServer, timeout: float = 2.0) -> int:
    async with await RpcClient.connect(
        LOOPBACK, srv.port, NFS, 3, transport="udp", timeout=1
    ) as client:
        return (await client.call(1, timeout=timeout)).unpack_uint()


def test_a_udp_call_gets_its_reply() -> None:
    async def scenario() -> int:
        async with UdpServer(lambda call, n: [accepted(call.xid, struct.pack(">I", 5))]) as srv:
            return await _udp_call(srv)

    assert run(scenario()) == 5


def test_replies_with_other_xids_are_skipped() -> None:
    def stale_first(call: Call, n: int) -> list[bytes]:
        return [b"\x01", accepted(call.xid + 1, b"\0\0\0\1"), accepted(call.xid, b"\0\0\0\2")]

    async def scenario() -> int:
        async with UdpServer(stale_first) as srv:
            return await _udp_call(srv)

    assert run(scenario()) == 2


def test_a_lost_call_is_retransmitted_with_the_same_xid() -> None:
    def drop_first(call: Call, n: int) -> list[bytes]:
        return [] if n == 1 else [accepted(call.xid, b"\0\0\0\3")]

    async def scenario() -> tuple[int, UdpServer]:
        async with UdpServer(drop_first) as srv:
            return await _udp_call(srv), srv

    value, srv = run(scenario())
    assert value == 3
    assert len(srv.calls) == 2
    assert srv.calls[0].xid == srv.calls[1].xid


def test_a_udp_server_that_never_answers_times_out_within_the_deadline() -> None:
    async def scenario() -> None:
        async with UdpServer(lambda call, n: []) as srv:
            start = time.monotonic()
            with pytest.raises(RpcTimeout):
                await _udp_call(srv, timeout=0.3)
            assert time.monotonic() - start < 0.3 + 0.2

    run(scenario())


def test_a_garbage_datagram_with_the_right_xid_is_a_malformed_reply() -> None:
    async def scenario() -> None:
        async with UdpServer(lambda call, n: [struct.pack(">II", call.xid, 0)]) as srv:
            await _udp_call(srv)

    with pytest.raises(XdrError):
        run(scenario())


def test_the_udp_socket_survives_a_timeout() -> None:
    def answer_second(call: Call, n: int) -> list[bytes]:
        return [accepted(call.xid, b"\0\0\0\4")] if call.procedure == 2 else []

    async def scenario() -> int:
        async with (
            UdpServer(answer_second) as srv,
            await RpcClient.connect(
                LOOPBACK, srv.port, NFS, 3, transport="udp", timeout=1
            ) as client,
        ):
            with pytest.raises(RpcTimeout):
                await client.call(1, timeout=0.05)
            return (await client.call(2, timeout=1)).unpack_uint()

    assert run(scenario()) == 4


def test_udp_to_a_closed_port_is_refused() -> None:
    start = time.monotonic()
    with pytest.raises(RpcConnectionError):
        run(ping(LOOPBACK, closed_port(socket.SOCK_DGRAM), NFS, 3, transport="udp", timeout=2))
    assert time.monotonic() - start < 1.0


def test_a_flood_of_stale_datagrams_does_not_hold_off_the_deadline() -> None:
    async def scenario() -> None:
        stale = lambda call, n: [accepted(call.xid + 1)] * 200  # noqa: E731
        async with UdpServer(stale) as srv:
            start = time.monotonic()
            with pytest.raises(RpcTimeout):
                await _udp_call(srv, timeout=0.3)
            assert time.monotonic() - start < 0.3 + 0.2

    run(scenario())


def test_a_udp_batch_runs_its_calls_in_turn_and_returns_results_in_order() -> None:
    async def scenario() -> tuple[list[int], UdpServer]:
        echo = lambda call, n: [accepted(call.xid, struct.pack(">I", call.procedure))]  # noqa: E731
        async with (
            UdpServer(echo) as srv,
            await RpcClient.connect(
                LOOPBACK, srv.port, NFS, 3, transport="udp", timeout=1
            ) as client,
        ):
            replies = await client.call_many([(0, b""), (1, b"x"), (2, b"")], timeout=2)
            return [u.unpack_uint() for u in replies], srv

    values, srv = run(scenario())
    assert values == [0, 1, 2]
    assert [c.procedure for c in srv.calls] == [0, 1, 2]


def test_a_failing_call_stops_a_udp_batch_and_the_socket_survives() -> None:
    def reject_first(call: Call, n: int) -> list[bytes]:
        return [accepted(call.xid, stat=PROG_UNAVAIL if call.procedure == 0 else 0)]

    async def scenario() -> UdpServer:
        async with (
            UdpServer(reject_first) as srv,
            await RpcClient.connect(
                LOOPBACK, srv.port, NFS, 3, transport="udp", timeout=1
            ) as client,
        ):
            with pytest.raises(RpcAcceptError, match="PROG_UNAVAIL"):
                await client.call_many([(0, b""), (1, b"")], timeout=2)
            assert not client.closed
            return srv

    assert [c.procedure for c in run(scenario()).calls] == [0]


def test_a_udp_batch_shares_one_deadline() -> None:
    def answer_first(call: Call, n: int) -> list[bytes]:
        return [accepted(call.xid)] if call.procedure == 0 else []

    async def scenario() -> None:
        async with (
            UdpServer(answer_first) as srv,
            await RpcClient.connect(
                LOOPBACK, srv.port, NFS, 3, transport="udp", timeout=1
            ) as client,
        ):
            start = time.monotonic()
            with pytest.raises(RpcTimeout):
                await client.call_many([(0, b""), (1, b"")], timeout=0.3)
            assert time.monotonic() - start < 0.3 + 0.2

    run(scenario())
