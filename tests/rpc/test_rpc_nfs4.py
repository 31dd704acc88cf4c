"""NFSv4 NULL: reachability of program 100003 version 4."""

from __future__ import annotations

import struct

import pytest
from rpc_fake_server import Answer, Call, TcpServer, accepted, answer_ok, record, run

from nfs_failover.errors import RpcAcceptError
from nfs_failover.rpc import nfs4
from nfs_failover.rpc.client import AUTH_NONE, NFS, PROG_MISMATCH


def test_null_calls_procedure_zero_of_nfs_version_4() -> None:
    async def scenario() -> list[Call]:
        async with TcpServer(answer_ok()) as srv:
            await nfs4.null("127.0.0.1", srv.port, timeout=2)
            return srv.calls

    [call] = run(scenario())
    assert (call.program, call.version, call.procedure) == (NFS, 4, 0)
    assert call.cred_flavor == AUTH_NONE


def test_a_v3_only_server_answers_prog_mismatch() -> None:
    def v3_only(call: Call) -> Answer:
        return Answer(record(accepted(call.xid, struct.pack(">II", 3, 3), PROG_MISMATCH)))

    async def scenario() -> None:
        async with TcpServer(v3_only) as srv:
            await nfs4.null("127.0.0.1", srv.port, timeout=2)

    with pytest.raises(RpcAcceptError, match="versions 3 to 3"):
        run(scenario())
