"""XDR: round trips, and hostile input that must only ever raise XdrError."""

from __future__ import annotations

import contextlib
import struct
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nfs_failover.errors import XdrError
from nfs_failover.rpc.xdr import MAX_FHANDLE, Packer, Unpacker

u32 = st.integers(0, 2**32 - 1)
i32 = st.integers(-(2**31), 2**31 - 1)
u64 = st.integers(0, 2**64 - 1)
i64 = st.integers(-(2**63), 2**63 - 1)


@given(u32, i32, u64, i64, st.booleans())
def test_integers_and_bools_round_trip(a: int, b: int, c: int, d: int, e: bool) -> None:
    p = Packer()
    p.pack_uint(a)
    p.pack_int(b)
    p.pack_uhyper(c)
    p.pack_hyper(d)
    p.pack_bool(e)
    u = Unpacker(p.getvalue())
    assert (u.unpack_uint(), u.unpack_int(), u.unpack_uhyper(), u.unpack_hyper()) == (a, b, c, d)
    assert u.unpack_bool() is e
    u.done()


@given(st.binary(max_size=200), st.binary(max_size=10))
def test_opaques_round_trip_with_zero_padding(data: bytes, fixed: bytes) -> None:
    p = Packer()
    p.pack_opaque(data)
    p.pack_fopaque(len(fixed), fixed)
    raw = p.getvalue()
    assert len(raw) % 4 == 0
    assert raw == struct.pack(">I", len(data)) + data + b"\0" * (-len(data) % 4) + fixed + (
        b"\0" * (-len(fixed) % 4)
    )
    u = Unpacker(memoryview(raw))
    assert u.unpack_opaque() == data
    assert u.unpack_fopaque(len(fixed)) == fixed
    u.done()


@given(st.text(max_size=100))
def test_strings_round_trip_as_utf8(text: str) -> None:
    p = Packer()
    p.pack_string(text, max_len=1000)
    assert Unpacker(p.getvalue()).unpack_string(max_len=1000) == text


@given(st.binary(max_size=100))
def test_non_utf8_names_round_trip_byte_for_byte_through_surrogateescape(name: bytes) -> None:
    p = Packer()
    p.pack_string(name)
    decoded = Unpacker(p.getvalue()).unpack_string()
    assert decoded.encode("utf-8", "surrogateescape") == name
    again = Packer()
    again.pack_string(decoded)
    assert again.getvalue() == p.getvalue()


@given(st.lists(u32, max_size=50))
def test_arrays_and_linked_lists_round_trip(values: list[int]) -> None:
    p = Packer()
    p.pack_array(values, p.pack_uint)
    p.pack_list(values, p.pack_uint)
    u = Unpacker(p.getvalue())
    assert u.unpack_array(u.unpack_uint) == values
    assert u.unpack_list(u.unpack_uint) == values
    u.done()


def test_optional_items_decode_to_the_item_or_none() -> None:
    p = Packer()
    p.pack_bool(True)
    p.pack_uint(7)
    p.pack_bool(False)
    u = Unpacker(p.getvalue())
    assert u.unpack_optional(u.unpack_uint) == 7
    assert u.unpack_optional(u.unpack_uint) is None


@pytest.mark.parametrize(
    ("method", "value"),
    [("pack_uint", -1), ("pack_uint", 2**32), ("pack_int", 2**31), ("pack_uhyper", 2**64)],
)
def test_values_out_of_range_cannot_be_packed(method: str, value: int) -> None:
    with pytest.raises(XdrError):
        getattr(Packer(), method)(value)


def test_packing_respects_length_bounds() -> None:
    p = Packer()
    with pytest.raises(XdrError):
        p.pack_opaque(b"x" * 65, max_len=MAX_FHANDLE)
    with pytest.raises(XdrError):
        p.pack_string("x" * 1025)
    with pytest.raises(XdrError):
        p.pack_fopaque(8, b"short")
    with pytest.raises(XdrError):
        p.pack_array(range(3), p.pack_uint, max_count=2)
    with pytest.raises(XdrError):
        p.pack_string("\ud800")  # a lone surrogate that is not an escaped byte


def _composite() -> bytes:
    p = Packer()
    p.pack_uint(1)
    p.pack_uhyper(2)
    p.pack_opaque(b"abcde")
    p.pack_string("name")
    p.pack_array([1, 2], p.pack_uint)
    p.pack_list([3], p.pack_uint)
    p.pack_fopaque(3, b"xyz")
    return p.getvalue()


def _decode_composite(u: Unpacker) -> None:
    u.unpack_uint()
    u.unpack_uhyper()
    u.unpack_opaque()
    u.unpack_string()
    u.unpack_array(u.unpack_uint)
    u.unpack_list(u.unpack_uint)
    u.unpack_fopaque(3)
    u.done()


def test_truncation_at_every_byte_offset_raises_xdr_error() -> None:
    raw = _composite()
    _decode_composite(Unpacker(raw))
    for cut in range(len(raw)):
        with pytest.raises(XdrError):
            _decode_composite(Unpacker(raw[:cut]))


def test_trailing_bytes_fail_only_when_strictness_is_asked_for() -> None:
    u = Unpacker(b"\0\0\0\1\0\0\0\2")
    assert u.unpack_uint() == 1
    assert u.remaining == 4
    with pytest.raises(XdrError):
        u.done()


def test_bools_other_than_zero_or_one_are_rejected() -> None:
    with pytest.raises(XdrError):
        Unpacker(struct.pack(">I", 2)).unpack_bool()


def _peak_allocation(fn: object) -> int:
    tracemalloc.start()
    try:
        with pytest.raises(XdrError):
            fn()  # type: ignore[operator]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("length", [0xFFFFFFFF, 0x7FFFFFFF, 1024 * 1024 + 1])
def test_huge_opaque_length_raises_without_allocating(length: int) -> None:
    raw = struct.pack(">I", length) + b"x" * 64
    assert _peak_allocation(lambda: Unpacker(raw).unpack_opaque()) < 64 * 1024


def test_opaque_length_over_its_bound_is_rejected_even_if_the_bytes_are_there() -> None:
    raw = struct.pack(">I", 65) + b"x" * 68
    with pytest.raises(XdrError, match="bound"):
        Unpacker(raw).unpack_opaque(MAX_FHANDLE)


def test_opaque_length_beyond_the_remaining_bytes_is_truncation() -> None:
    with pytest.raises(XdrError, match="truncated"):
        Unpacker(struct.pack(">I", 100) + b"x" * 10).unpack_opaque()


def test_huge_array_count_raises_without_allocating() -> None:
    raw = struct.pack(">I", 0xFFFFFFFF) + b"\0" * 64
    u = Unpacker(raw)
    assert _peak_allocation(lambda: u.unpack_array(u.unpack_uint, max_count=2**40)) < 64 * 1024


def test_array_count_over_its_bound_is_rejected() -> None:
    raw = struct.pack(">4I", 3, 1, 2, 3)
    u = Unpacker(raw)
    with pytest.raises(XdrError, match="bound"):
        u.unpack_array(u.unpack_uint, max_count=2)


def test_endless_linked_list_stops_at_its_bound() -> None:
    raw = struct.pack(">II", 1, 7) * 10_000
    u = Unpacker(raw)
    with pytest.raises(XdrError, match="bound"):
        u.unpack_list(u.unpack_uint, max_count=100)
    assert u.position <= 101 * 8 + 4


@given(st.binary(max_size=64))
def test_random_bytes_decode_or_raise_only_xdr_error(raw: bytes) -> None:
    with contextlib.suppress(XdrError):
        _decode_composite(Unpacker(raw))
