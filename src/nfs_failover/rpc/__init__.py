"""A small hand-written asyncio ONC RPC client: XDR, portmapper v2, MOUNT v3, NFSv3, NFSv4 NULL.

Why by hand:

- There is no kernel NFS client on the machines we run on (``mount -t nfs`` cannot
  work), so every NFS byte, for probes and for the lab's client workload, goes through
  userspace code.
- Health probes must never block in the kernel. Against a zone whose packets are dropped,
  ``rpcinfo`` sits in a blocking ``connect`` for minutes, whatever ``timeout`` wraps it.
  Here every connect and every call has its own deadline on non-blocking sockets driven by
  asyncio, and cancellation always closes the socket.
- The existing Python libraries do not fit: the libnfs bindings call into blocking C, and
  the pure-Python RPC/XDR packages are unmaintained, synchronous, or both. None offers
  per-call deadlines or bounded parsing.
- Replies are hostile input: record marks, lengths and list counts are checked against
  bounds before anything is allocated, and every malformed reply raises ``XdrError``.
- Probes must be cheap, so there is no framework here: plain non-blocking sockets, one
  reader callback per connection, ``struct`` for the headers. ``tests/rpc/rpc_cpu_bench.py``
  measures it; the kernel's share of a probe is the same as a blocking client's.

Modules: ``xdr`` (encoding), ``message`` (RPC header, credentials, reply checks),
``client`` (sockets, deadlines, record marking), then one module per program:
``portmap``, ``mount``, ``nfs3`` (with its codecs in ``nfs3_xdr``), ``nfs4``.

Every failure is an ``nfs_failover.errors.RpcError`` subclass: RpcTimeout,
RpcConnectionError, XdrError, RpcRejected, RpcAcceptError or ProtocolStatusError.
"""

from nfs_failover.rpc.client import AuthNone, AuthSys, RpcClient, ping
from nfs_failover.rpc.mount import ExportEntry, MountClient, MountResult
from nfs_failover.rpc.nfs3 import Nfs3Client
from nfs_failover.rpc.portmap import Mapping, PortmapClient
from nfs_failover.rpc.xdr import Packer, Unpacker

__all__ = [
    "AuthNone",
    "AuthSys",
    "ExportEntry",
    "Mapping",
    "MountClient",
    "MountResult",
    "Nfs3Client",
    "Packer",
    "PortmapClient",
    "RpcClient",
    "Unpacker",
    "ping",
]
