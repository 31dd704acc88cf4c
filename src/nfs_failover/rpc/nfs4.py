"""NFSv4 reachability: the NULL procedure of program 100003 version 4, nothing more.

Enough to tell whether a server speaks NFSv4 at all; COMPOUND is not implemented.
"""

from __future__ import annotations

from nfs_failover.rpc.client import NFS, Transport, ping

NFS4_VERSION = 4
NFS_PORT = 2049


async def null(
    host: str, port: int = NFS_PORT, *, timeout: float, transport: Transport = "tcp"
) -> None:
    """Connects, calls NULL and closes, all within ``timeout`` seconds.

    Raises RpcTimeout, RpcConnectionError, RpcAcceptError (e.g. PROG_MISMATCH from a
    v3-only server) or another RpcError.
    """
    await ping(host, port, NFS, NFS4_VERSION, timeout=timeout, transport=transport)
