"""MOUNT v3: MNT statuses, the export list and its bounds, and the calls on the wire."""

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

from nfs_failover.errors import ProtocolStatusError, RpcAcceptError, XdrError
from nfs_failover.rpc.client import AUTH_SYS, MOUNT, PROG_UNAVAIL
from nfs_failover.rpc.mount import (
    MNT3_STATUS_NAMES,
    ExportEntry,
    MountClient,
    MountResult,
    decode_exports,
    decode_mnt,
)
from nfs_failover.rpc.xdr import Packer, Unpacker

ROOT_FH = bytes(range(32))


def _mnt_ok(p: Packer) -> None:
    p.pack_uint(0)
    p.pack_opaque(ROOT_FH)
    p.pack_array([1, 0], p.pack_uint)


def _exports(entries: list[tuple[str, list[str]]]) -> bytes:
    p = Packer()
    for path, groups in entries:
        p.pack_bool(True)
        p.pack_string(path)
        p.pack_list(groups, p.pack_string)
    p.pack_bool(False)
    return p.getvalue()


EXPORTS = [("/srv/az1/vol", ["*"]), ("/srv/other", ["198.18.0.0/15", "@ops"]), ("/none", [])]


def mountd(call: Call) -> Answer:
    assert call.program == MOUNT
    if call.procedure == 1:
        u = Unpacker(call.args)
        path = u.unpack_string()
        u.done()
        results = xdr(_mnt_ok) if path == "/srv/az1/vol" else struct.pack(">I", 2)
        return Answer(record(accepted(call.xid, results)))
    if call.procedure == 5:
        return Answer(record(accepted(call.xid, _exports(EXPORTS))))
    return Answer(record(accepted(call.xid)))


def test_mnt_returns_the_root_handle_and_auth_flavours() -> None:
    assert decode_mnt(Unpacker(xdr(_mnt_ok))) == MountResult(ROOT_FH, (1, 0))


@pytest.mark.parametrize(("status", "name"), sorted(MNT3_STATUS_NAMES.items())[1:])
def test_every_mnt_error_status_raises_with_its_name(status: int, name: str) -> None:
    with pytest.raises(ProtocolStatusError) as info:
        decode_mnt(Unpacker(struct.pack(">I", status)))
    assert (info.value.name, info.value.status, info.value.procedure) == (name, status, "MNT")


def test_the_status_table_has_every_rfc_1813_mount_status() -> None:
    assert set(MNT3_STATUS_NAMES) == {0, 1, 2, 5, 13, 20, 22, 63, 10004, 10006}
    assert MNT3_STATUS_NAMES[2] == "MNT3ERR_NOENT"


def test_an_unknown_mnt_status_still_raises_a_status_error() -> None:
    with pytest.raises(ProtocolStatusError, match="MNT3ERR_UNKNOWN_99"):
        decode_mnt(Unpacker(struct.pack(">I", 99)))


def test_a_file_handle_over_64_bytes_is_malformed() -> None:
    raw = xdr(lambda p: (p.pack_uint(0), p.pack_opaque(b"x" * 65), p.pack_uint(0)))
    with pytest.raises(XdrError):
        decode_mnt(Unpacker(raw))


def test_the_export_list_decodes_paths_and_groups() -> None:
    assert decode_exports(Unpacker(_exports(EXPORTS))) == [
        ExportEntry(path, tuple(groups)) for path, groups in EXPORTS
    ]


def test_an_endless_export_list_is_cut_off_at_its_bound() -> None:
    raw = _exports([("/x", [])] * 200)
    with pytest.raises(XdrError, match="bound"):
        decode_exports(Unpacker(raw), max_exports=100)


def test_an_endless_group_list_is_cut_off_at_its_bound() -> None:
    raw = _exports([("/x", ["g"] * 200)])
    with pytest.raises(XdrError, match="bound"):
        decode_exports(Unpacker(raw), max_groups=100)


def test_mount_calls_send_the_path_with_auth_sys() -> None:
    async def scenario() -> tuple[MountResult, list[ExportEntry], list[Call]]:
        async with (
            TcpServer(mountd) as srv,
            await MountClient.connect(LOOPBACK, srv.port, timeout=2) as client,
        ):
            await client.null()
            result = await client.mnt("/srv/az1/vol")
            with pytest.raises(ProtocolStatusError, match="MNT3ERR_NOENT"):
                await client.mnt(b"/missing")
            await client.umnt("/srv/az1/vol")
            return result, await client.export(), srv.calls

    result, exports, calls = run(scenario())
    assert result.fhandle == ROOT_FH
    assert [e.path for e in exports] == [path for path, _ in EXPORTS]
    assert [c.procedure for c in calls] == [0, 1, 1, 3, 5]
    assert {c.cred_flavor for c in calls} == {AUTH_SYS}


def test_null_mnt_pipelines_both_calls_and_returns_the_mount() -> None:
    async def scenario() -> tuple[MountResult, list[Call]]:
        held = answer_together(2, lambda call: mountd(call).data, reverse=True)
        async with (
            TcpServer(held) as srv,
            await MountClient.connect(LOOPBACK, srv.port, timeout=2) as client,
        ):
            return await client.null_mnt("/srv/az1/vol"), srv.calls

    result, calls = run(scenario())
    assert result == MountResult(ROOT_FH, (1, 0))
    assert [c.procedure for c in calls] == [0, 1]
    assert {c.cred_flavor for c in calls} == {AUTH_SYS}


def test_null_mnt_of_a_missing_export_raises_the_mnt_status() -> None:
    async def scenario() -> bool:
        async with (
            TcpServer(answer_together(2, lambda call: mountd(call).data)) as srv,
            await MountClient.connect(LOOPBACK, srv.port, timeout=2) as client,
        ):
            with pytest.raises(ProtocolStatusError, match="MNT3ERR_NOENT"):
                await client.null_mnt(b"/missing")
            return client.rpc.closed

    assert run(scenario()) is False


def test_null_mnt_raises_a_failing_null_even_when_mnt_succeeds() -> None:
    def null_unavailable(call: Call) -> bytes:
        if call.procedure == 0:
            return record(accepted(call.xid, stat=PROG_UNAVAIL))
        return mountd(call).data

    async def scenario() -> None:
        async with (
            TcpServer(answer_together(2, null_unavailable)) as srv,
            await MountClient.connect(LOOPBACK, srv.port, timeout=2) as client,
        ):
            await client.null_mnt("/srv/az1/vol")

    with pytest.raises(RpcAcceptError, match="PROG_UNAVAIL"):
        run(scenario())
