"""NFSv3: decoders on hand-built replies, and the client's calls against a fake server."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

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

from nfs_failover.errors import ProtocolStatusError, XdrError
from nfs_failover.rpc.client import AUTH_SYS, NFS
from nfs_failover.rpc.nfs3 import (
    NFS3_STATUS_NAMES,
    CreateMode,
    Fattr3,
    Ftype3,
    Nfs3Client,
    NfsTime,
    Sattr3,
    StableHow,
)
from nfs_failover.rpc.nfs3_xdr import (
    decode_access,
    decode_commit,
    decode_fsinfo,
    decode_getattr,
    decode_lookup,
    decode_read,
    decode_readdirplus,
    decode_write,
)
from nfs_failover.rpc.xdr import Packer, Unpacker

VERF = b"VERIFIER"
ROOT = b"root-fh"


def fattr(fileid: int = 7, ftype: int = 1, size: int = 100) -> bytes:
    return struct.pack(
        ">IIIIIQQIIQQIIIIII",
        ftype,
        0o644,
        1,
        0,
        0,
        size,
        4096,
        0,
        0,
        99,
        fileid,
        1,
        2,
        3,
        4,
        5,
        6,
    )


def post_op(attrs: bytes | None) -> bytes:
    return struct.pack(">I", 0) if attrs is None else struct.pack(">I", 1) + attrs


def wcc() -> bytes:
    return struct.pack(">I", 1) + struct.pack(">QIIII", 10, 1, 2, 3, 4) + post_op(fattr())


def entry(p: Packer, name: str, fileid: int, attrs: bool = True) -> None:
    p.pack_bool(True)
    p.pack_uhyper(fileid)
    p.pack_string(name)
    p.pack_uhyper(fileid * 10)  # cookie
    if attrs:
        p.pack_bool(True)
        p.pack_fopaque(84, fattr(fileid))
        p.pack_bool(True)
        p.pack_opaque(f"fh-{name}".encode())
    else:
        p.pack_bool(False)
        p.pack_bool(False)


def readdirplus_reply(names: list[str], eof: bool, first_id: int = 1) -> bytes:
    p = Packer()
    p.pack_uint(0)
    p.pack_bool(False)  # no directory attributes
    p.pack_fopaque(8, VERF)
    for i, name in enumerate(names):
        entry(p, name, first_id + i)
    p.pack_bool(False)
    p.pack_bool(eof)
    return p.getvalue()


def test_getattr_decodes_every_attribute() -> None:
    attrs = decode_getattr(Unpacker(struct.pack(">I", 0) + fattr(fileid=42, ftype=2)))
    assert attrs == Fattr3(
        Ftype3.DIR,
        0o644,
        1,
        0,
        0,
        100,
        4096,
        (0, 0),
        99,
        42,
        NfsTime(1, 2),
        NfsTime(3, 4),
        NfsTime(5, 6),
    )


def test_a_non_ok_status_raises_with_name_number_and_procedure() -> None:
    with pytest.raises(ProtocolStatusError) as info:
        decode_getattr(Unpacker(struct.pack(">II", 70, 0)))
    assert (info.value.name, info.value.status, info.value.procedure) == (
        "NFS3ERR_STALE",
        70,
        "GETATTR",
    )


def test_the_status_table_names_every_rfc_1813_error() -> None:
    assert len(NFS3_STATUS_NAMES) == 29
    assert NFS3_STATUS_NAMES[30] == "NFS3ERR_ROFS"
    assert NFS3_STATUS_NAMES[10008] == "NFS3ERR_JUKEBOX"
    assert all(n.startswith("NFS3ERR_") for s, n in NFS3_STATUS_NAMES.items() if s)


def test_an_unknown_file_type_is_malformed() -> None:
    with pytest.raises(XdrError, match="file type"):
        decode_getattr(Unpacker(struct.pack(">I", 0) + fattr(ftype=9)))


def test_truncated_attributes_are_malformed_at_every_length() -> None:
    raw = struct.pack(">I", 0) + fattr()
    for cut in range(len(raw)):
        with pytest.raises(XdrError):
            decode_getattr(Unpacker(raw[:cut]))


def test_lookup_gives_the_handle_and_optional_attributes() -> None:
    raw = xdr(lambda p: (p.pack_uint(0), p.pack_opaque(b"fh"))) + post_op(None) + post_op(fattr())
    assert decode_lookup(Unpacker(raw)) == (b"fh", None)


def test_access_gives_the_granted_bits() -> None:
    assert decode_access(Unpacker(struct.pack(">I", 0) + post_op(fattr()) + b"\0\0\0\x03")) == 3


def test_read_gives_data_eof_and_attributes() -> None:
    raw = (
        struct.pack(">I", 0)
        + post_op(fattr())
        + xdr(lambda p: (p.pack_uint(5), p.pack_bool(True), p.pack_opaque(b"hello")))
    )
    result = decode_read(Unpacker(raw), count=5)
    assert (result.data, result.eof, result.attrs is not None) == (b"hello", True, True)


def test_read_data_longer_than_asked_for_is_malformed() -> None:
    raw = (
        struct.pack(">I", 0)
        + post_op(None)
        + xdr(lambda p: (p.pack_uint(6), p.pack_bool(False), p.pack_opaque(b"hello!")))
    )
    with pytest.raises(XdrError):
        decode_read(Unpacker(raw), count=5)


def test_write_gives_count_commitment_and_verifier() -> None:
    raw = struct.pack(">I", 0) + wcc() + struct.pack(">II", 512, 2) + VERF
    result = decode_write(Unpacker(raw))
    assert (result.count, result.committed, result.verifier) == (512, StableHow.FILE_SYNC, VERF)
    assert result.wcc.before is not None
    assert result.wcc.before.size == 10


def test_write_with_an_unknown_stable_how_is_malformed() -> None:
    raw = struct.pack(">I", 0) + post_op(None) + post_op(None) + struct.pack(">II", 1, 3) + VERF
    with pytest.raises(XdrError):
        decode_write(Unpacker(b"\0\0\0\0" + raw[4:]))


def test_readdirplus_decodes_entries_cookies_and_eof() -> None:
    p = Packer()
    p.pack_uint(0)
    p.pack_bool(True)
    p.pack_fopaque(84, fattr(2, 2))
    p.pack_fopaque(8, VERF)
    entry(p, "a", 3)
    entry(p, "b\udcff", 4, attrs=False)
    p.pack_bool(False)
    p.pack_bool(True)
    result = decode_readdirplus(Unpacker(p.getvalue()))
    assert result.eof
    assert result.cookieverf == VERF
    assert result.dir_attrs is not None
    a, b = result.entries
    assert (a.name, a.fileid, a.cookie, a.fh) == ("a", 3, 30, b"fh-a")
    assert a.attrs is not None
    assert a.attrs.fileid == 3
    assert (b.name.encode("utf-8", "surrogateescape"), b.attrs, b.fh) == (b"b\xff", None, None)


def test_an_endless_readdirplus_list_is_cut_off_at_its_bound() -> None:
    raw = readdirplus_reply([f"f{i}" for i in range(50)], eof=True)
    with pytest.raises(XdrError, match="bound"):
        decode_readdirplus(Unpacker(raw), max_entries=20)


def test_fsinfo_and_commit_decode() -> None:
    fsinfo = (
        struct.pack(">I", 0)
        + post_op(None)
        + struct.pack(
            ">IIIIIIIQIII", 1 << 20, 1 << 20, 4096, 1 << 20, 1 << 20, 4096, 65536, 2**63, 0, 1, 0x1B
        )
    )
    info = decode_fsinfo(Unpacker(fsinfo))
    assert (info.rtmax, info.wtmax, info.maxfilesize, info.properties) == (
        1 << 20,
        1 << 20,
        2**63,
        0x1B,
    )
    assert info.time_delta == NfsTime(0, 1)
    assert decode_commit(Unpacker(struct.pack(">I", 0) + wcc() + VERF)) == VERF


# --- the client against a fake NFS server ---------------------------------------------


@dataclass
class FakeNfs:
    """Answers each NFSv3 procedure with ``replies[proc](args)``; records the calls."""

    replies: dict[int, Callable[[Unpacker], bytes]]
    calls: list[Call] = field(default_factory=list)

    def __call__(self, call: Call) -> Answer:
        assert (call.program, call.version) == (NFS, 3)
        self.calls.append(call)
        return Answer(record(accepted(call.xid, self.replies[call.procedure](Unpacker(call.args)))))


def with_client(fake: FakeNfs, work: Callable[[Nfs3Client], object]) -> object:
    async def scenario() -> object:
        async with (
            TcpServer(fake) as srv,
            await Nfs3Client.connect(LOOPBACK, srv.port, timeout=2) as nfs,
        ):
            return await work(nfs)  # type: ignore[misc]

    return run(scenario())


def test_write_sends_offset_stability_and_data_with_auth_sys() -> None:
    seen: list[tuple[bytes, int, int, int, bytes]] = []

    def write(u: Unpacker) -> bytes:
        seen.append(
            (
                u.unpack_opaque(64),
                u.unpack_uhyper(),
                u.unpack_uint(),
                u.unpack_uint(),
                u.unpack_opaque(),
            )
        )
        u.done()
        return struct.pack(">I", 0) + wcc() + struct.pack(">II", 3, 1) + VERF

    fake = FakeNfs({7: write})
    result = with_client(fake, lambda nfs: nfs.write(b"fh", 2**40, b"abc", StableHow.DATA_SYNC))
    assert seen == [(b"fh", 2**40, 3, 1, b"abc")]
    assert fake.calls[0].cred_flavor == AUTH_SYS
    assert result.count == 3  # type: ignore[attr-defined]


def test_a_write_to_a_read_only_export_raises_nfs3err_rofs() -> None:
    fake = FakeNfs({7: lambda u: struct.pack(">I", 30) + post_op(None) + post_op(None)})
    with pytest.raises(ProtocolStatusError) as info:
        with_client(fake, lambda nfs: nfs.write(b"fh", 0, b"x"))
    assert (info.value.name, info.value.status, info.value.procedure) == (
        "NFS3ERR_ROFS",
        30,
        "WRITE",
    )


def test_create_without_a_handle_in_the_reply_looks_the_file_up() -> None:
    def create(u: Unpacker) -> bytes:
        assert (u.unpack_opaque(64), u.unpack_string(), u.unpack_uint()) == (ROOT, "new", 1)
        assert (u.unpack_bool(), u.unpack_uint()) == (True, 0o600)  # mode
        return struct.pack(">III", 0, 0, 0) + post_op(None) + post_op(None)

    def lookup(u: Unpacker) -> bytes:
        return xdr(lambda p: (p.pack_uint(0), p.pack_opaque(b"new-fh"))) + post_op(None) * 2

    fake = FakeNfs({8: create, 3: lookup})
    fh = with_client(
        fake, lambda nfs: nfs.create(ROOT, "new", mode=CreateMode.GUARDED, attrs=Sattr3(mode=0o600))
    )
    assert fh == b"new-fh"
    assert [c.procedure for c in fake.calls] == [8, 3]


def test_exclusive_create_sends_the_verifier_and_returns_the_handle() -> None:
    def create(u: Unpacker) -> bytes:
        assert (u.unpack_opaque(64), u.unpack_string(), u.unpack_uint()) == (ROOT, "x", 2)
        assert u.unpack_fopaque(8) == VERF
        u.done()
        return xdr(lambda p: (p.pack_uint(0), p.pack_bool(True), p.pack_opaque(b"x-fh"))) + (
            post_op(None) + post_op(None) + post_op(None)
        )

    fh = with_client(
        FakeNfs({8: create}),
        lambda nfs: nfs.create(ROOT, "x", mode=CreateMode.EXCLUSIVE, verifier=VERF),
    )
    assert fh == b"x-fh"


def test_mkdir_and_remove_round_trip() -> None:
    def mkdir(u: Unpacker) -> bytes:
        u.unpack_opaque(64)
        u.unpack_string()
        assert (u.unpack_bool(), u.unpack_uint()) == (True, 0o755)
        return xdr(lambda p: (p.pack_uint(0), p.pack_bool(True), p.pack_opaque(b"d"))) + (
            post_op(fattr(ftype=2)) + wcc()
        )

    async def work(nfs: Nfs3Client) -> bytes:
        fh = await nfs.mkdir(ROOT, "d")
        await nfs.remove(ROOT, "f")
        return fh

    fake = FakeNfs({9: mkdir, 12: lambda u: struct.pack(">I", 0) + wcc()})
    assert with_client(fake, work) == b"d"


def test_listdir_pages_with_cookies_until_eof_and_skips_dot_entries() -> None:
    def readdirplus(u: Unpacker) -> bytes:
        u.unpack_opaque(64)
        cookie, verf = u.unpack_uhyper(), u.unpack_fopaque(8)
        if cookie == 0:
            assert verf == b"\0" * 8
            return readdirplus_reply([".", "..", "a"], eof=False, first_id=1)
        assert (cookie, verf) == (30, VERF)
        return readdirplus_reply(["b"], eof=True, first_id=4)

    fake = FakeNfs({17: readdirplus})
    entries = with_client(fake, lambda nfs: nfs.listdir(ROOT))
    assert [e.name for e in entries] == ["a", "b"]  # type: ignore[attr-defined]
    assert len(fake.calls) == 2


def test_listdir_gives_up_on_a_directory_that_never_ends() -> None:
    fake = FakeNfs({17: lambda u: readdirplus_reply(["x"], eof=False)})
    with pytest.raises(XdrError, match="3 pages"):
        with_client(fake, lambda nfs: nfs.listdir(ROOT, max_pages=3))


def test_listdir_gives_up_on_an_empty_page_without_eof() -> None:
    fake = FakeNfs({17: lambda u: readdirplus_reply([], eof=False)})
    with pytest.raises(XdrError, match="no entries"):
        with_client(fake, lambda nfs: nfs.listdir(ROOT))


def test_getattr_read_access_fsinfo_and_commit_over_the_wire() -> None:
    replies: dict[int, Callable[[Unpacker], bytes]] = {
        0: lambda u: b"",
        1: lambda u: struct.pack(">I", 0) + fattr(),
        4: lambda u: struct.pack(">I", 0) + post_op(None) + struct.pack(">I", 1),
        6: lambda u: (
            struct.pack(">I", 0) + post_op(None) + struct.pack(">III", 2, 1, 2) + b"hi\0\0"
        ),
        19: lambda u: struct.pack(">I", 0) + post_op(None) + bytes(48),
        21: lambda u: struct.pack(">I", 0) + wcc() + VERF,
    }

    async def work(nfs: Nfs3Client) -> tuple[object, ...]:
        await nfs.null()
        return (
            (await nfs.getattr(ROOT)).size,
            await nfs.access(ROOT, 0x3F),
            (await nfs.read(ROOT, 0, 10)).data,
            (await nfs.fsinfo(ROOT)).rtmax,
            await nfs.commit(ROOT),
        )

    assert with_client(FakeNfs(replies), work) == (100, 1, b"hi", 0, VERF)


def test_null_getattr_pipelines_both_calls_and_returns_the_attributes() -> None:
    fake = FakeNfs({0: lambda u: b"", 1: lambda u: struct.pack(">I", 0) + fattr(fileid=9)})
    held = answer_together(2, lambda call: fake(call).data, reverse=True)

    async def scenario() -> tuple[Fattr3, list[Call]]:
        async with (
            TcpServer(held) as srv,
            await Nfs3Client.connect(LOOPBACK, srv.port, timeout=2) as nfs,
        ):
            return await nfs.null_getattr(ROOT, timeout=1), srv.calls

    attrs, calls = run(scenario())
    assert attrs.fileid == 9
    fh_args = xdr(lambda p: p.pack_opaque(ROOT))
    assert [(c.procedure, c.args, c.cred_flavor) for c in calls] == [
        (0, b"", AUTH_SYS),
        (1, fh_args, AUTH_SYS),
    ]


def test_null_getattr_raises_the_getattr_status() -> None:
    fake = FakeNfs({0: lambda u: b"", 1: lambda u: struct.pack(">II", 70, 0)})
    with pytest.raises(ProtocolStatusError, match="NFS3ERR_STALE"):
        with_client(fake, lambda nfs: nfs.null_getattr(ROOT))
