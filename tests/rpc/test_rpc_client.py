"""RpcClient over TCP against a scripted loopback server: good replies and hostile ones."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rpc_fake_server import (
    LOOPBACK,
    Answer,
    Call,
    Handler,
    TcpServer,
    accepted,
    answer_ok,
    closed_port,
    denied_auth,
    denied_rpc_mismatch,
    record,
    run,
)

from nfs_failover.errors import (
    RpcAcceptError,
    RpcConnectionError,
    RpcError,
    RpcRejected,
    RpcTimeout,
    XdrError,
)
from nfs_failover.rpc.client import (
    AUTH_SYS,
    DEFAULT_MAX_RECORD,
    GARBAGE_ARGS,
    NFS,
    PROC_UNAVAIL,
    PROG_MISMATCH,
    PROG_UNAVAIL,
    SYSTEM_ERR,
    AuthSys,
    RpcClient,
    decode_reply,
    ping,
)
from nfs_failover.rpc.xdr import Unpacker


async def _call_once(
    handler: Handler, *, timeout: float = 2.0, procedure: int = 1, args: bytes = b"", **kw: object
) -> Unpacker:
    async with TcpServer(handler) as srv:
        client = await RpcClient.connect(LOOPBACK, srv.port, NFS, 3, timeout=2.0, **kw)  # type: ignore[arg-type]
        async with client:
            return await client.call(procedure, args, timeout=timeout)


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Until ``condition()`` holds, looked at every few milliseconds; TimeoutError after
    ``timeout`` seconds. For what no event announces: a socket's state, a reader paused."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def _syn_sent_to(port: int) -> bool:
    """Whether a socket of this machine waits in SYN-SENT for 127.0.0.1:``port``."""
    remote = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as table:
        rows = [line.split() for line in table.readlines()[1:]]
    return any(row[2] == remote and row[3] == "02" for row in rows)


def _fails_with(handler: Handler, error: type[RpcError], timeout: float = 2.0) -> RpcError:
    with pytest.raises(RpcError) as info:
        run(_call_once(handler, timeout=timeout))
    assert type(info.value) is error, repr(info.value)
    return info.value


def test_a_correct_reply_returns_the_results_positioned_after_the_header() -> None:
    u = run(_call_once(answer_ok(struct.pack(">II", 42, 43))))
    assert (u.unpack_uint(), u.unpack_uint()) == (42, 43)
    u.done()


def test_the_call_carries_program_version_procedure_args_and_auth_sys() -> None:
    async def scenario() -> Call:
        async with TcpServer(answer_ok()) as srv:
            auth = AuthSys(uid=1000, gid=100, gids=(4, 5), machinename="host", stamp=9)
            async with await RpcClient.connect(
                LOOPBACK, srv.port, 100005, 3, timeout=2, auth=auth
            ) as client:
                await client.call(7, b"ARGS", timeout=2)
            return srv.calls[0]

    call = run(scenario())
    assert (call.program, call.version, call.procedure, call.args) == (100005, 3, 7, b"ARGS")
    assert call.cred_flavor == AUTH_SYS
    expected = struct.pack(">II4s5I", 9, 4, b"host", 1000, 100, 2, 4, 5)
    assert call.cred_body == expected


def test_sequential_calls_use_fresh_xids_over_one_connection() -> None:
    async def scenario() -> TcpServer:
        async with (
            TcpServer(answer_ok()) as srv,
            await RpcClient.connect(LOOPBACK, srv.port, NFS, 3, timeout=2) as client,
        ):
            for _ in range(5):
                await client.call(0, timeout=2)
            return srv

    srv = run(scenario())
    assert srv.connections == 1
    assert len({c.xid for c in srv.calls}) == 5


def test_concurrent_calls_on_one_client_each_get_their_own_reply() -> None:
    def echo_procedure(call: Call) -> Answer:
        return Answer(record(accepted(call.xid, struct.pack(">I", call.procedure))))

    async def scenario() -> list[int]:
        async with (
            TcpServer(echo_procedure) as srv,
            await RpcClient.connect(LOOPBACK, srv.port, NFS, 3, timeout=2) as client,
        ):
            replies = await asyncio.gather(*(client.call(p, timeout=2) for p in range(10)))
            return [u.unpack_uint() for u in replies]

    assert run(scenario()) == list(range(10))


def test_a_reply_in_many_fragments_is_reassembled() -> None:
    def fragmented(call: Call) -> Answer:
        payload = accepted(call.xid, b"0123456789ab")
        parts = [payload[i : i + 5] for i in range(0, len(payload), 5)]
        data = b"".join(record(p, last=False) for p in parts[:-1]) + record(parts[-1])
        return Answer(record(b"", last=False) + data)

    assert run(_call_once(fragmented)).unpack_fopaque(12) == b"0123456789ab"


def test_a_reply_dribbled_byte_by_byte_is_reassembled() -> None:
    def dribble(call: Call) -> Answer:
        return Answer(record(accepted(call.xid, b"abcd")), dribble=True)

    assert run(_call_once(dribble)).unpack_fopaque(4) == b"abcd"


def test_a_record_of_exactly_max_record_bytes_is_accepted_and_one_more_is_not() -> None:
    def sized(size: int) -> Handler:
        return lambda call: Answer(record(accepted(call.xid).ljust(size, b"\0")))

    assert run(_call_once(sized(1000), max_record=1000)).remaining == 1000 - 24
    with pytest.raises(XdrError):
        run(_call_once(sized(1001), max_record=1000))


def test_a_truncated_reply_then_close_is_a_connection_error() -> None:
    def truncated(call: Call) -> Answer:
        return Answer(record(accepted(call.xid, b"x" * 100))[:50], close=True)

    _fails_with(truncated, RpcConnectionError)


def test_a_server_that_closes_after_the_call_is_a_connection_error() -> None:
    _fails_with(lambda call: Answer(close=True), RpcConnectionError)


def test_a_server_that_closes_on_connect_is_a_connection_error() -> None:
    async def scenario() -> None:
        async with (
            TcpServer(answer_ok(), close_on_connect=True) as srv,
            await RpcClient.connect(LOOPBACK, srv.port, NFS, 3, timeout=2) as client,
        ):
            await srv.wait_for_closed()
            await client.call(0, timeout=2)

    with pytest.raises(RpcConnectionError):
        run(scenario())


@pytest.mark.parametrize("mark", [0x7FFFFFFF, 0xFFFFFFFF, DEFAULT_MAX_RECORD + 1])
def test_a_huge_record_mark_is_rejected_at_once(mark: int) -> None:
    start = time.monotonic()
    _fails_with(lambda call: Answer(struct.pack(">I", mark) + b"x" * 64), XdrError)
    assert time.monotonic() - start < 1.0


@pytest.mark.parametrize(
    "fragment", [record(b"", last=False), record(b"abcd" * 8, last=False)], ids=["empty", "small"]
)
def test_endless_non_last_fragments_are_rejected(fragment: bytes) -> None:
    _fails_with(lambda call: Answer(forever=fragment * 256), XdrError, timeout=10.0)


def test_garbage_bytes_in_a_record_are_a_malformed_reply() -> None:
    _fails_with(lambda call: Answer(record(b"\xde\xad\xbe\xef" * 3)), XdrError)


def test_a_reply_with_another_xid_is_a_protocol_error_and_closes_the_connection() -> None:
    async def scenario() -> RpcClient:
        wrong = lambda call: Answer(record(accepted(call.xid ^ 1)))  # noqa: E731
        async with TcpServer(wrong) as srv:
            client = await RpcClient.connect(LOOPBACK, srv.port, NFS, 3, timeout=2)
            with pytest.raises(XdrError, match="xid"):
                await client.call(0, timeout=2)
            with pytest.raises(RpcConnectionError, match="closed"):
                await client.call(0, timeout=2)
            return client

    assert run(scenario()).closed


def test_msg_denied_rpc_mismatch_is_rejected_with_the_versions() -> None:
    error = _fails_with(lambda c: Answer(record(denied_rpc_mismatch(c.xid, 2, 2))), RpcRejected)
    assert "RPC_MISMATCH" in str(error)
    assert "2 to 2" in str(error)


def test_msg_denied_auth_error_is_rejected_with_the_auth_stat_name() -> None:
    error = _fails_with(lambda c: Answer(record(denied_auth(c.xid, 5))), RpcRejected)
    assert "AUTH_ERROR AUTH_TOOWEAK" in str(error)


@pytest.mark.parametrize(
    ("stat", "name"),
    [
        (PROG_UNAVAIL, "PROG_UNAVAIL"),
        (PROC_UNAVAIL, "PROC_UNAVAIL"),
        (GARBAGE_ARGS, "GARBAGE_ARGS"),
        (SYSTEM_ERR, "SYSTEM_ERR"),
    ],
)
def test_accept_errors_carry_their_stat_and_name(stat: int, name: str) -> None:
    error = _fails_with(lambda c: Answer(record(accepted(c.xid, stat=stat))), RpcAcceptError)
    assert isinstance(error, RpcAcceptError)
    assert error.accept_stat == stat
    assert name in str(error)


def test_prog_mismatch_says_which_versions_the_server_has() -> None:
    reply = lambda c: Answer(record(accepted(c.xid, struct.pack(">II", 2, 3), PROG_MISMATCH)))  # noqa: E731
    error = _fails_with(reply, RpcAcceptError)
    assert "PROG_MISMATCH" in str(error)
    assert "versions 2 to 3" in str(error)


def test_a_rejection_leaves_the_connection_usable() -> None:
    def first_fails(call: Call) -> Answer:
        stat = PROC_UNAVAIL if call.procedure == 9 else 0
        return Answer(record(accepted(call.xid, stat=stat)))

    async def scenario() -> None:
        async with (
            TcpServer(first_fails) as srv,
            await RpcClient.connect(LOOPBACK, srv.port, NFS, 3, timeout=2) as client,
        ):
            with pytest.raises(RpcAcceptError):
                await client.call(9, timeout=2)
            await client.call(0, timeout=2)

    run(scenario())


def test_a_server_that_never_answers_times_out_within_the_deadline() -> None:
    start = time.monotonic()
    _fails_with(lambda call: None, RpcTimeout, timeout=0.3)
    assert time.monotonic() - start < 0.3 + 0.2 + 0.3  # + server setup and teardown


def test_after_a_timeout_the_tcp_client_is_closed() -> None:
    async def scenario() -> RpcClient:
        async with TcpServer(lambda call: None) as srv:
            client = await RpcClient.connect(LOOPBACK, srv.port, NFS, 3, timeout=2)
            with pytest.raises(RpcTimeout):
                await client.call(0, timeout=0.05)
            with pytest.raises(RpcConnectionError):
                await client.call(0, timeout=0.05)
            return client

    assert run(scenario()).closed


def test_cancelling_a_call_closes_its_socket() -> None:
    async def scenario() -> RpcClient:
        async with TcpServer(lambda call: None) as srv:
            client = await RpcClient.connect(LOOPBACK, srv.port, NFS, 3, timeout=2)
            task = asyncio.create_task(client.call(0, timeout=5))
            await srv.wait_for_calls()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return client

    assert run(scenario()).closed


def test_closing_during_a_call_closes_the_socket_when_the_call_ends() -> None:
    async def scenario() -> RpcClient:
        async with TcpServer(lambda call: None) as srv:
            client = await RpcClient.connect(LOOPBACK, srv.port, NFS, 3, timeout=2)
            task = asyncio.create_task(client.call(0, timeout=0.2))
            await srv.wait_for_calls()
            await client.close()
            assert not client.closed
            with pytest.raises(RpcTimeout):
                await task
            return client

    assert run(scenario()).closed


def test_a_waiting_call_that_times_out_does_not_break_the_call_in_flight() -> None:
    def slow(call: Call) -> Answer | None:
        return Answer(record(accepted(call.xid))) if call.procedure == 0 else None

    async def scenario() -> None:
        async with (
            TcpServer(slow) as srv,
            await RpcClient.connect(LOOPBACK, srv.port, NFS, 3, timeout=2) as client,
        ):
            first = asyncio.create_task(client.call(0, timeout=2))
            second = asyncio.create_task(client.call(1, timeout=0.0))
            await first
            with pytest.raises(RpcTimeout):
                await second
            assert not client.closed

    run(scenario())


def test_connection_refused_on_a_closed_port_fails_fast() -> None:
    start = time.monotonic()
    with pytest.raises(RpcConnectionError):
        run(RpcClient.connect(LOOPBACK, closed_port(), NFS, 3, timeout=5))
    assert time.monotonic() - start < 1.0


def _fill_accept_queue(port: int) -> list[socket.socket]:
    fillers: list[socket.socket] = []
    for _ in range(16):
        s = socket.socket()
        s.settimeout(0.2)
        try:
            s.connect((LOOPBACK, port))
        except TimeoutError:
            s.close()
            return fillers
        fillers.append(s)
    for s in fillers:
        s.close()
    pytest.skip("the kernel kept accepting connections on a full queue")


def test_a_connect_that_gets_no_answer_times_out_within_the_deadline() -> None:
    # A listener whose accept queue is full drops SYNs: the loopback twin of a dead zone.
    with socket.socket() as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = _fill_accept_queue(port)
        try:
            start = time.monotonic()
            with pytest.raises(RpcTimeout):
                run(RpcClient.connect(LOOPBACK, port, NFS, 3, timeout=0.3))
            assert time.monotonic() - start < 0.3 + 0.2
        finally:
            for s in fillers:
                s.close()


def test_a_connect_whose_handshake_is_late_still_succeeds() -> None:
    # The first SYN is dropped (full queue); once the queue drains the retransmitted SYN
    # (about 1 s later) completes the handshake while the client waits for writability.
    async def scenario(listener: socket.socket, port: int) -> bool:
        fillers = _fill_accept_queue(port)
        connecting = asyncio.create_task(RpcClient.connect(LOOPBACK, port, NFS, 3, timeout=5))
        await _until(lambda: _syn_sent_to(port))  # and dropped: the queue is full
        assert not connecting.done()
        accepted_socket, _ = listener.accept()
        for s in (*fillers, accepted_socket):
            s.close()
        async with await connecting as client:
            return not client.closed

    with socket.socket() as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen(0)
        assert run(scenario(listener, listener.getsockname()[1]))


def test_ping_calls_null_and_closes() -> None:
    async def scenario() -> TcpServer:
        async with TcpServer(answer_ok()) as srv:
            await ping(LOOPBACK, srv.port, NFS, 4, timeout=2)
            return srv

    srv = run(scenario())
    assert [(c.program, c.version, c.procedure) for c in srv.calls] == [(NFS, 4, 0)]


def test_unknown_transports_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match="transport"):
        run(RpcClient.connect(LOOPBACK, 1, NFS, 3, transport="sctp", timeout=1))  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=80))
def test_random_reply_bytes_after_a_valid_record_mark_only_raise_rpc_errors(body: bytes) -> None:
    def hostile(call: Call) -> Answer:
        return Answer(record(struct.pack(">I", call.xid) + body), close=True)

    with contextlib.suppress(RpcError):
        run(_call_once(hostile, timeout=2.0))


@settings(max_examples=2000)
@given(st.binary(max_size=64), st.sampled_from([0, 1]))
def test_random_reply_headers_decode_or_raise_only_rpc_errors(body: bytes, kind: int) -> None:
    prefix = struct.pack(">II", 7, 1) if kind else b""
    with contextlib.suppress(RpcError):
        decode_reply(prefix + body, 7)


def test_a_one_mebibyte_reply_is_read_whole() -> None:
    data = bytes(range(256)) * 4096

    def big(call: Call) -> Answer:
        return Answer(record(accepted(call.xid, struct.pack(">I", len(data)) + data)))

    assert run(_call_once(big)).unpack_opaque() == data


def test_a_server_flooding_between_calls_is_not_read_beyond_the_bound() -> None:
    def answer_then_flood(call: Call) -> Answer:
        return Answer(record(accepted(call.xid)), forever=b"\xff" * 65536)

    async def scenario() -> RpcClient:
        async with TcpServer(answer_then_flood) as srv:
            client = await RpcClient.connect(LOOPBACK, srv.port, NFS, 3, timeout=2, max_record=4096)
            await client.call(0, timeout=2)
            await _until(lambda: not client._reading)  # it stopped reading the flood
            buffered = len(client._buf)
            assert 4096 < buffered <= 4096 + 2 * 65536
            with pytest.raises(XdrError):
                await client.call(0, timeout=2)
            return client

    assert run(scenario()).closed
