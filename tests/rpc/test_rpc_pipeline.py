"""RpcClient.call_many: several calls in one write, replies matched by xid."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable, Sequence

import pytest
from rpc_fake_server import (
    LOOPBACK,
    Answer,
    Call,
    Handler,
    TcpServer,
    accepted,
    answer_together,
    denied_auth,
    parse_call,
    record,
    run,
)

from nfs_failover.errors import (
    RpcAcceptError,
    RpcConnectionError,
    RpcRejected,
    RpcTimeout,
    XdrError,
)
from nfs_failover.rpc.client import NFS, PROC_UNAVAIL, PROG_UNAVAIL, RpcClient

TWO_CALLS = [(0, b""), (1, b"ARGS")]


def echo(call: Call) -> bytes:
    """A reply whose results are the call's procedure and argument length."""
    return record(accepted(call.xid, struct.pack(">II", call.procedure, len(call.args))))


def failing(procedure: int, stat: int) -> Callable[[Call], bytes]:
    """``echo``, except that ``procedure`` is answered with accept_stat ``stat``."""
    return lambda c: record(accepted(c.xid, stat=stat)) if c.procedure == procedure else echo(c)


async def _batch(
    handler: Handler, calls: Sequence[tuple[int, bytes]] = TWO_CALLS, timeout: float = 2.0
) -> tuple[list[tuple[int, int]], TcpServer]:
    async with (
        TcpServer(handler) as srv,
        await RpcClient.connect(LOOPBACK, srv.port, NFS, 3, timeout=2) as client,
    ):
        replies = await client.call_many(calls, timeout=timeout)
        return [(u.unpack_uint(), u.unpack_uint()) for u in replies], srv


def test_replies_in_order_come_back_in_call_order_with_fresh_xids() -> None:
    results, srv = run(_batch(answer_together(2, echo)))
    assert results == [(0, 0), (1, 4)]
    assert [(c.procedure, c.args) for c in srv.calls] == TWO_CALLS
    assert len({c.xid for c in srv.calls}) == 2
    assert srv.connections == 1


def test_replies_out_of_order_are_matched_by_xid() -> None:
    calls = [(p, b"x" * p) for p in range(5)]
    results, _ = run(_batch(answer_together(5, echo, reverse=True), calls))
    assert results == [(p, p) for p in range(5)]


def test_every_call_reaches_the_server_before_any_reply_in_one_read() -> None:
    reads: list[list[Call]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read(65536)
        calls = []
        while data:
            (mark,) = struct.unpack_from(">I", data)
            end = 4 + (mark & 0x7FFFFFFF)
            calls.append(parse_call(data[4:end]))
            data = data[end:]
        reads.append(calls)
        writer.write(b"".join(echo(c) for c in calls))
        await writer.drain()
        writer.close()

    async def scenario() -> list[tuple[int, int]]:
        server = await asyncio.start_server(serve, LOOPBACK, 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            async with await RpcClient.connect(LOOPBACK, port, NFS, 3, timeout=2) as client:
                replies = await client.call_many(TWO_CALLS, timeout=2)
                return [(u.unpack_uint(), u.unpack_uint()) for u in replies]

    assert run(scenario()) == [(0, 0), (1, 4)]
    assert [[c.procedure for c in calls] for calls in reads] == [[0, 1]]


@pytest.mark.parametrize("reverse", [False, True], ids=["in-order", "out-of-order"])
@pytest.mark.parametrize("failing_procedure", [0, 1])
def test_a_failing_reply_raises_its_error_after_all_replies_and_keeps_the_connection(
    failing_procedure: int, reverse: bool
) -> None:
    async def scenario() -> RpcClient:
        handler = answer_together(2, failing(failing_procedure, PROG_UNAVAIL), reverse=reverse)
        async with TcpServer(handler) as srv:
            client = await RpcClient.connect(LOOPBACK, srv.port, NFS, 3, timeout=2)
            with pytest.raises(RpcAcceptError, match=f"proc {failing_procedure}: PROG_UNAVAIL"):
                await client.call_many(TWO_CALLS, timeout=2)
            # Both replies were read, so the stream is in step for the next batch.
            again = await client.call_many([(2, b""), (3, b"")], timeout=2)
            assert [u.unpack_uint() for u in again] == [2, 3]
            await client.close()
            return client

    assert run(scenario()).closed


def test_the_error_of_the_earliest_failing_call_wins() -> None:
    def both_fail(call: Call) -> bytes:
        if call.procedure == 0:
            return record(denied_auth(call.xid, 1))
        return record(accepted(call.xid, stat=PROC_UNAVAIL))

    with pytest.raises(RpcRejected, match="AUTH_BADCRED"):
        run(_batch(answer_together(2, both_fail, reverse=True)))


def test_a_missing_second_reply_times_out_and_closes_the_connection() -> None:
    def first_only(call: Call) -> bytes:
        return echo(call) if call.procedure == 0 else b""

    async def scenario() -> RpcClient:
        async with TcpServer(answer_together(2, first_only)) as srv:
            client = await RpcClient.connect(LOOPBACK, srv.port, NFS, 3, timeout=2)
            start = time.monotonic()
            with pytest.raises(RpcTimeout, match="procs 0\\+1"):
                await client.call_many(TWO_CALLS, timeout=0.3)
            assert time.monotonic() - start < 0.3 + 0.5
            with pytest.raises(RpcConnectionError, match="closed"):
                await client.call(0, timeout=1)
            return client

    assert run(scenario()).closed


def test_a_rejection_then_a_missing_reply_raises_the_rejection_at_the_deadline() -> None:
    def reject_first(call: Call) -> bytes:
        return record(accepted(call.xid, stat=PROG_UNAVAIL)) if call.procedure == 0 else b""

    async def scenario() -> RpcClient:
        async with TcpServer(answer_together(2, reject_first)) as srv:
            client = await RpcClient.connect(LOOPBACK, srv.port, NFS, 3, timeout=2)
            with pytest.raises(RpcAcceptError) as info:
                await client.call_many(TWO_CALLS, timeout=0.3)
            assert info.value.accept_stat == PROG_UNAVAIL
            assert isinstance(info.value.__cause__, RpcTimeout)
            return client

    assert run(scenario()).closed


@pytest.mark.parametrize(
    "reply",
    [
        lambda c: record(accepted(c.xid ^ 0x5555)),
        lambda c: echo(c) + echo(c),  # the second copy answers nothing still pending
        lambda c: record(b"\0\0"),
    ],
    ids=["unknown-xid", "duplicate", "no-xid"],
)
def test_a_reply_matching_no_pending_call_is_malformed_and_closes_the_connection(
    reply: Callable[[Call], bytes],
) -> None:
    async def scenario() -> RpcClient:
        async with TcpServer(answer_together(2, reply)) as srv:
            client = await RpcClient.connect(LOOPBACK, srv.port, NFS, 3, timeout=2)
            with pytest.raises(XdrError, match="xid"):
                await client.call_many(TWO_CALLS, timeout=2)
            return client

    assert run(scenario()).closed


def test_a_malformed_reply_in_the_batch_closes_the_connection() -> None:
    def garbage_second(call: Call) -> bytes:
        return echo(call) if call.procedure == 0 else record(struct.pack(">II", call.xid, 7))

    async def scenario() -> RpcClient:
        async with TcpServer(answer_together(2, garbage_second)) as srv:
            client = await RpcClient.connect(LOOPBACK, srv.port, NFS, 3, timeout=2)
            with pytest.raises(XdrError, match="proc 1: message type 7"):
                await client.call_many(TWO_CALLS, timeout=2)
            return client

    assert run(scenario()).closed


def test_an_empty_batch_sends_nothing() -> None:
    results, srv = run(_batch(lambda call: None, []))
    assert results == []
    assert srv.calls == []


def test_a_batch_on_a_closed_client_is_a_connection_error() -> None:
    async def scenario() -> None:
        async with TcpServer(lambda call: None) as srv:
            client = await RpcClient.connect(LOOPBACK, srv.port, NFS, 3, timeout=2)
            await client.close()
            await client.call_many(TWO_CALLS, timeout=1)

    with pytest.raises(RpcConnectionError, match="closed"):
        run(scenario())


def test_calls_and_batches_from_concurrent_tasks_take_turns() -> None:
    def echo_now(call: Call) -> Answer:
        return Answer(echo(call))

    async def scenario() -> list[object]:
        async with (
            TcpServer(echo_now) as srv,
            await RpcClient.connect(LOOPBACK, srv.port, NFS, 3, timeout=2) as client,
        ):
            batch = [(p, b"") for p in range(3)]
            done = await asyncio.gather(
                client.call_many(batch, timeout=2),
                client.call(7, timeout=2),
                client.call_many(batch[::-1], timeout=2),
            )
            return [
                [u.unpack_uint() for u in d] if isinstance(d, list) else d.unpack_uint()
                for d in done
            ]

    assert run(scenario()) == [[0, 1, 2], 7, [2, 1, 0]]
