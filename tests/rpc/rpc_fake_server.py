"""Scripted fake ONC RPC servers on 127.0.0.1 (TCP and UDP) and reply builders for tests.

Calls are parsed with ``struct``, independently of the code under test, so the tests also
check what the client puts on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from nfs_failover.rpc.xdr import Packer

T = TypeVar("T")
LOOPBACK = "127.0.0.1"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@dataclass
class Call:
    xid: int
    program: int
    version: int
    procedure: int
    cred_flavor: int
    cred_body: bytes
    args: bytes


def parse_call(msg: bytes) -> Call:
    xid, mtype, rpcvers, prog, vers, proc, flavor, clen = struct.unpack_from(">8I", msg)
    assert (mtype, rpcvers) == (0, 2), "not an RPC v2 CALL"
    cred = msg[32 : 32 + clen]
    pos = 32 + ((clen + 3) & ~3)
    vflavor, vlen = struct.unpack_from(">II", msg, pos)
    assert (vflavor, vlen) == (0, 0), "verifier must be AUTH_NONE"
    return Call(xid, prog, vers, proc, flavor, cred, msg[pos + 8 :])


def record(payload: bytes, last: bool = True) -> bytes:
    return struct.pack(">I", (0x80000000 if last else 0) | len(payload)) + payload


def accepted(xid: int, results: bytes = b"", stat: int = 0) -> bytes:
    """An accepted reply (AUTH_NONE verifier); ``results`` follow the accept_stat."""
    return struct.pack(">6I", xid, 1, 0, 0, 0, stat) + results


def denied_rpc_mismatch(xid: int, low: int, high: int) -> bytes:
    return struct.pack(">6I", xid, 1, 1, 0, low, high)


def denied_auth(xid: int, auth_stat: int) -> bytes:
    return struct.pack(">5I", xid, 1, 1, 1, auth_stat)


def xdr(build: Callable[[Packer], None]) -> bytes:
    p = Packer()
    build(p)
    return p.getvalue()


@dataclass
class Answer:
    """What the TCP server does with one call: send ``data`` (raw, record marks
    included), optionally byte by byte, then maybe ``forever`` repeated until the client
    goes away, then maybe close."""

    data: bytes = b""
    close: bool = False
    dribble: bool = False
    forever: bytes | None = None


Handler = Callable[[Call], Answer | None]


def answer_ok(results: bytes = b"") -> Handler:
    return lambda call: Answer(record(accepted(call.xid, results)))


def answer_together(
    count: int, reply: Callable[[Call], bytes], *, reverse: bool = False
) -> Handler:
    """Holds every answer until ``count`` calls have arrived, then sends ``reply(call)``
    (raw, record marks included) for all of them in one write, last call first if
    ``reverse``. A client that waits for each reply before its next call never gets one."""
    held: list[Call] = []

    def handler(call: Call) -> Answer | None:
        held.append(call)
        if len(held) < count:
            return None
        batch = held[::-1] if reverse else held[:]
        held.clear()
        return Answer(b"".join(reply(c) for c in batch))

    return handler


@dataclass
class TcpServer:
    """``async with TcpServer(handler) as srv``: serves on 127.0.0.1:srv.port.

    ``wait_for_calls`` and ``wait_for_closed`` let a test wait until the server has seen
    a call, or closed a connection, instead of sleeping."""

    handler: Handler
    close_on_connect: bool = False
    calls: list[Call] = field(default_factory=list)
    connections: int = 0
    closed: int = 0  # connections the server has closed
    port: int = 0
    _server: asyncio.Server | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def __aenter__(self) -> TcpServer:
        self._server = await asyncio.start_server(self._serve, LOOPBACK, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    async def wait_for_calls(self, count: int = 1, timeout: float = 5.0) -> None:
        """Until ``count`` calls have arrived; TimeoutError after ``timeout`` seconds."""
        await self._until(lambda: len(self.calls) >= count, timeout)

    async def wait_for_closed(self, count: int = 1, timeout: float = 5.0) -> None:
        """Until the server has closed ``count`` connections; TimeoutError after
        ``timeout`` seconds."""
        await self._until(lambda: self.closed >= count, timeout)

    async def _until(self, condition: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(condition)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        try:
            while not self.close_on_connect:
                (mark,) = struct.unpack(">I", await reader.readexactly(4))
                assert mark & 0x80000000, "the client sends single-fragment records"
                call = parse_call(await reader.readexactly(mark & 0x7FFFFFFF))
                self.calls.append(call)
                await self._notify()
                answer = self.handler(call)
                if answer is not None and await self._send(answer, writer):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self.closed += 1
            await self._notify()

    async def _send(self, answer: Answer, writer: asyncio.StreamWriter) -> bool:
        chunks = list(answer.data) if answer.dribble else [answer.data]
        for chunk in chunks:
            writer.write(bytes([chunk]) if isinstance(chunk, int) else chunk)
            await writer.drain()
            if answer.dribble:
                await asyncio.sleep(0.001)
        while answer.forever is not None:
            writer.write(answer.forever)
            await writer.drain()
        return answer.close


UdpHandler = Callable[[Call, int], list[bytes]]


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: UdpServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        call = parse_call(data)
        self.server.calls.append(call)
        assert self.transport is not None
        for datagram in self.server.handler(call, len(self.server.calls)):
            self.transport.sendto(datagram, addr)


@dataclass
class UdpServer:
    """Calls ``handler(call, n)`` (n counts datagrams received) and sends what it returns."""

    handler: UdpHandler
    calls: list[Call] = field(default_factory=list)
    port: int = 0
    _transport: asyncio.DatagramTransport | None = None

    async def __aenter__(self) -> UdpServer:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self), local_addr=(LOOPBACK, 0)
        )
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._transport is not None
        self._transport.close()


def closed_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
    return port
