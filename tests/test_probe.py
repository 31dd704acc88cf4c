"""Probe results: how failures are classified and told, against scripted servers."""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from nfs_failover.errors import (
    ProtocolStatusError,
    RpcAcceptError,
    RpcConnectionError,
    RpcRejected,
    RpcTimeout,
    XdrError,
)
from nfs_failover.probe import Prober, ProbeResult, Reason, Stage, StageResult, classify

sys.path.insert(0, str(Path(__file__).parent / "rpc"))
from rpc_fake_server import LOOPBACK, Answer, Call, TcpServer, accepted, record


@pytest.mark.parametrize(
    ("error", "reason", "detail"),
    [
        (RpcTimeout("no reply in 2s"), Reason.TIMEOUT, "no reply in 2s"),
        (RpcConnectionError("connect: refused"), Reason.REFUSED, "connect: refused"),
        (ProtocolStatusError("MNT3ERR_ACCES", 13, "MNT"), Reason.STATUS, "MNT3ERR_ACCES"),
        (ProtocolStatusError("NFS3ERR_STALE", 70, "GETATTR"), Reason.STATUS, "NFS3ERR_STALE"),
        (XdrError("record of 2147483647 bytes"), Reason.MALFORMED, "record of 2147483647 bytes"),
        (RpcAcceptError("PROG_UNAVAIL", 1), Reason.RPC_ERROR, "PROG_UNAVAIL"),
        (RpcRejected("AUTH_TOOWEAK"), Reason.RPC_ERROR, "AUTH_TOOWEAK"),
    ],
)
def test_each_rpc_error_family_maps_to_one_reason(
    error: Exception, reason: Reason, detail: str
) -> None:
    assert classify(error) == (reason, detail)


def _result(*stages: StageResult, writable: bool | None = None) -> ProbeResult:
    up = all(s.ok for s in stages)
    return ProbeResult("198.18.1.5:/crr-site1", up, stages, 0.0042, writable)


def test_summary_names_the_failed_stage_and_why() -> None:
    result = _result(
        StageResult(Stage.PORTMAP, True, 0.001),
        StageResult(Stage.GETPORT, True, 0.001),
        StageResult(Stage.MOUNTD, True, 0.001),
        StageResult(Stage.MNT, False, 0.001, Reason.STATUS, "MNT3ERR_NOENT"),
    )
    assert result.summary() == "down at mnt: MNT3ERR_NOENT"
    assert result.to_json()["failed_stage"] == "mnt"
    assert result.to_json()["reason"] == "status"


def test_summary_of_an_up_probe_tells_whether_it_takes_writes() -> None:
    ok = StageResult(Stage.GETATTR, True, 0.001)
    assert _result(ok).summary() == "up in 4.2 ms"
    assert _result(ok, writable=False).summary() == "up in 4.2 ms, read-only"
    assert _result(ok, writable=True).to_json()["failed_stage"] is None


def _rpcbind_knowing_nothing(call: Call) -> Answer:
    return Answer(record(accepted(call.xid, struct.pack(">I", 0))))


def _silent(call: Call) -> Answer:
    return Answer()  # accepts the call and never answers, like a hung server


def test_programs_missing_from_the_portmapper_are_reported_not_registered() -> None:
    async def scenario() -> ProbeResult:
        async with TcpServer(_rpcbind_knowing_nothing) as server:
            prober = Prober(timeout=2.0, keep=False, portmap_port=server.port)
            return await prober.probe(f"{LOOPBACK}:/vol")

    result = asyncio.run(scenario())
    assert not result.up
    assert result.failed is not None
    assert (result.failed.stage, result.failed.reason) == (Stage.GETPORT, Reason.NOT_REGISTERED)
    assert "mountd" in result.failed.detail


def test_a_server_that_never_answers_is_down_within_the_deadline() -> None:
    async def scenario() -> tuple[ProbeResult, float]:
        async with TcpServer(_silent) as server:
            prober = Prober(timeout=0.5, keep=False, portmap_port=server.port)
            started = time.monotonic()
            result = await prober.probe(f"{LOOPBACK}:/vol")
            return result, time.monotonic() - started

    result, elapsed = asyncio.run(scenario())
    assert result.failed is not None
    assert (result.failed.stage, result.failed.reason) == (Stage.GETPORT, Reason.TIMEOUT)
    assert "0.5s deadline" in result.failed.detail
    assert elapsed < 0.5 + 0.5


def test_a_closed_port_is_refused_at_the_portmapper_stage() -> None:
    with socket.socket() as placeholder:  # a port that was free a moment ago
        placeholder.bind((LOOPBACK, 0))
        port = placeholder.getsockname()[1]
    prober = Prober(timeout=2.0, keep=False, portmap_port=port)
    result = asyncio.run(prober.probe(f"{LOOPBACK}:/vol"))
    assert result.failed is not None
    assert (result.failed.stage, result.failed.reason) == (Stage.PORTMAP, Reason.REFUSED)


def _server_with_mountd(mount_answer: Callable[[Call], Answer]) -> Callable[[Call], Answer]:
    """One fake port for everything: the portmapper points mountd and nfs back at it."""
    port: list[int] = []

    def handle(call: Call) -> Answer:
        if call.program == 100000:
            return Answer(record(accepted(call.xid, struct.pack(">I", port[0]))))
        return mount_answer(call)

    handle.port = port  # type: ignore[attr-defined]
    return handle


def _probe_fake(handler: Callable[[Call], Answer]) -> ProbeResult:
    async def scenario() -> ProbeResult:
        async with TcpServer(handler) as server:
            handler.port.append(server.port)  # type: ignore[attr-defined]
            prober = Prober(timeout=1.0, keep=False, portmap_port=server.port)
            return await prober.probe(f"{LOOPBACK}:/vol")

    return asyncio.run(scenario())


def test_a_mountd_that_refuses_its_null_call_fails_the_mountd_stage() -> None:
    result = _probe_fake(_server_with_mountd(lambda c: Answer(record(accepted(c.xid, stat=1)))))
    assert result.failed is not None
    assert (result.failed.stage, result.failed.reason) == (Stage.MOUNTD, Reason.RPC_ERROR)
    assert [s.stage for s in result.stages] == [Stage.PORTMAP, Stage.GETPORT, Stage.MOUNTD]


def test_an_export_refused_by_mountd_fails_the_mnt_stage_with_its_status() -> None:
    def mountd(call: Call) -> Answer:
        if call.procedure == 0:
            return Answer(record(accepted(call.xid)))
        return Answer(record(accepted(call.xid, struct.pack(">I", 13))))  # MNT3ERR_ACCES

    result = _probe_fake(_server_with_mountd(mountd))
    assert result.failed is not None
    assert (result.failed.stage, result.failed.detail) == (Stage.MNT, "MNT3ERR_ACCES")
    assert result.stages[2].ok  # mountd itself answered
