"""CPU cost of the RPC client per call, per connection and per full probe (not a test).

Run: ``.venv/bin/python tests/rpc/rpc_cpu_bench.py``. The fake server runs in a child
process so ``time.process_time`` counts only the client's CPU.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "tests" / "rpc"))

from rpc_fake_server import LOOPBACK, Answer, Call, TcpServer, UdpServer, accepted, record

from nfs_failover.rpc.client import MOUNT, NFS, PMAP, RpcClient
from nfs_failover.rpc.mount import MountClient
from nfs_failover.rpc.nfs3 import Nfs3Client
from nfs_failover.rpc.portmap import PortmapClient

FATTR = struct.pack(">IIIIIQQIIQQIIIIII", 2, 0o755, 2, 0, 0, 4096, 4096, 0, 0, 1, 1, *[0] * 6)
ROOT = b"r" * 32


def results(call: Call) -> bytes:
    if call.program == PMAP and call.procedure == 3:
        return struct.pack(">I", 2049)
    if call.program == MOUNT and call.procedure == 1:
        return struct.pack(">II", 0, 32) + ROOT + struct.pack(">II", 1, 1)
    if call.program == NFS and call.procedure == 1:
        return struct.pack(">I", 0) + FATTR
    return b""


def serve(ready: multiprocessing.synchronize.Event, ports: list[int]) -> None:  # type: ignore[name-defined]
    async def main() -> None:
        handler = lambda c: Answer(record(accepted(c.xid, results(c))))  # noqa: E731
        async with (
            TcpServer(handler) as tcp,
            UdpServer(lambda c, n: [accepted(c.xid, results(c))]) as udp,
        ):
            ports[0], ports[1] = tcp.port, udp.port
            ready.set()
            await asyncio.sleep(3600)

    asyncio.run(main())


def _cpu() -> tuple[float, float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return time.process_time(), usage.ru_utime, usage.ru_stime


async def measure(label: str, n: int, one: Callable[[], Awaitable[object]]) -> None:
    """Best of three runs of ``n``: CPU (process_time), its user and kernel parts, wall."""
    for _ in range(min(n, 50)):  # warm up
        await one()
    runs = []
    for _ in range(3):
        start, wall = _cpu(), time.perf_counter()
        for _ in range(n):
            await one()
        end, wall = _cpu(), time.perf_counter() - wall
        runs.append([(e - s) / n * 1e6 for s, e in zip(start, end, strict=True)] + [wall / n * 1e6])
    cpu, user, system, wall = min(runs)
    print(
        f"{label:36} {cpu:7.1f} us CPU ({user:5.1f} user {system:5.1f} kernel) {wall:7.1f} us wall"
    )


async def bench(tcp_port: int, udp_port: int) -> None:
    async with (
        await RpcClient.connect(LOOPBACK, tcp_port, NFS, 3, timeout=2) as tcp,
        await RpcClient.connect(LOOPBACK, udp_port, NFS, 3, transport="udp", timeout=2) as udp,
    ):
        await measure("NULL call over one TCP connection", 2000, lambda: tcp.call(0, timeout=2))
        await measure("NULL call over one UDP socket", 2000, lambda: udp.call(0, timeout=2))

    async def cycle() -> None:
        async with await RpcClient.connect(LOOPBACK, tcp_port, NFS, 3, timeout=2) as c:
            await c.call(0, timeout=2)

    async def probe() -> None:
        async with await PortmapClient.connect(LOOPBACK, port=tcp_port, timeout=2) as pmap:
            await pmap.getport(MOUNT, 3)
            await pmap.getport(NFS, 3)
        async with await MountClient.connect(LOOPBACK, tcp_port, timeout=2) as mountd:
            await mountd.null()
            fh = (await mountd.mnt("/srv/vol")).fhandle
        async with await Nfs3Client.connect(LOOPBACK, tcp_port, timeout=2) as nfs:
            await nfs.null()
            await nfs.getattr(fh)

    await measure("connect + NULL + close (TCP)", 500, cycle)
    await measure("full probe (3 connects, 6 calls)", 500, probe)


def blocking_floor(tcp_port: int) -> None:
    """The same 3 connections and 6 calls on blocking sockets, no parsing: the kernel's
    share, which no client can avoid (on loopback it includes the server's TCP work)."""
    call = struct.pack(">11I", 0x80000000 | 40, 1, 0, 2, NFS, 3, 0, 0, 0, 0, 0)

    def probe() -> None:
        for _ in range(3):
            with socket.create_connection((LOOPBACK, tcp_port)) as s:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for _ in range(2):
                    s.sendall(call)
                    s.recv(65536)

    async def one() -> None:
        probe()

    asyncio.run(measure("floor: same probe, blocking sockets", 500, one))


def main() -> None:
    ctx = multiprocessing.get_context("spawn")
    ready, ports = ctx.Event(), ctx.Manager().list([0, 0])
    server = ctx.Process(target=serve, args=(ready, ports), daemon=True)
    server.start()
    try:
        ready.wait(10)
        asyncio.run(bench(ports[0], ports[1]))
        blocking_floor(ports[0])
    finally:
        server.terminate()
        server.join()


if __name__ == "__main__":
    main()
