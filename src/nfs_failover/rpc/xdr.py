"""XDR (RFC 4506) encoding and bounded decoding of untrusted bytes.

Every ``unpack_*`` checks the remaining length, and every variable-length item checks its
bound and the remaining bytes *before* slicing or allocating, so hostile input can only
ever raise ``XdrError``. Strings decode as UTF-8 with ``errors="surrogateescape"``: NFS
names are arbitrary bytes, and ``name.encode("utf-8", "surrogateescape")`` (what
``pack_string`` does) gives the exact bytes back, as ``os.fsencode`` does for local paths.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from nfs_failover.errors import XdrError

T = TypeVar("T")

MAX_OPAQUE = 1024 * 1024  # one 1 MiB READ/WRITE payload, the most NFSv3 moves at once
MAX_STRING = 1024  # MNTPATHLEN; file names (NFS3 filename3) are shorter still
MAX_FHANDLE = 64  # NFS3_FHSIZE / FHSIZE3
MAX_ARRAY = 1024  # counts of arrays and linked lists unless the caller knows better

_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
_U64 = struct.Struct(">Q")
_I64 = struct.Struct(">q")
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")


def _padded(n: int) -> int:
    return (n + 3) & ~3


class Packer:
    """Builds XDR bytes. Anything that cannot be encoded raises ``XdrError``."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def getvalue(self) -> bytes:
        return bytes(self._buf)

    def _pack(self, st: struct.Struct, value: int, what: str) -> None:
        try:
            self._buf += st.pack(value)
        except struct.error as exc:
            raise XdrError(f"cannot encode {value!r} as {what}") from exc

    def pack_uint(self, value: int) -> None:
        self._pack(_U32, value, "uint32")

    def pack_int(self, value: int) -> None:
        self._pack(_I32, value, "int32")

    def pack_uhyper(self, value: int) -> None:
        self._pack(_U64, value, "uint64")

    def pack_hyper(self, value: int) -> None:
        self._pack(_I64, value, "int64")

    def pack_bool(self, value: bool) -> None:
        self._buf += _U32.pack(1 if value else 0)

    def pack_fopaque(self, n: int, data: bytes) -> None:
        """Fixed-length opaque: exactly ``n`` bytes, zero-padded to a multiple of four."""
        if len(data) != n:
            raise XdrError(f"fixed opaque needs {n} bytes, got {len(data)}")
        self._buf += data
        self._buf += _PAD[n & 3]

    def pack_opaque(self, data: bytes, max_len: int = MAX_OPAQUE) -> None:
        if len(data) > max_len:
            raise XdrError(f"opaque of {len(data)} bytes exceeds its bound {max_len}")
        self._buf += _U32.pack(len(data))
        self.pack_fopaque(len(data), data)

    def pack_string(self, value: str | bytes, max_len: int = MAX_STRING) -> None:
        if isinstance(value, str):
            try:
                value = value.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError as exc:
                raise XdrError(f"cannot encode string {value!r}") from exc
        self.pack_opaque(value, max_len)

    def pack_array(
        self, items: Iterable[T], pack_item: Callable[[T], None], max_count: int = MAX_ARRAY
    ) -> None:
        """Variable-length array: a count, then the items."""
        items = list(items)
        if len(items) > max_count:
            raise XdrError(f"array of {len(items)} items exceeds its bound {max_count}")
        self.pack_uint(len(items))
        for item in items:
            pack_item(item)

    def pack_list(self, items: Iterable[T], pack_item: Callable[[T], None]) -> None:
        """XDR optional-data linked list: ``TRUE item`` per item, then ``FALSE``."""
        for item in items:
            self.pack_bool(True)
            pack_item(item)
        self.pack_bool(False)


class Unpacker:
    """Reads XDR from untrusted bytes; every method raises ``XdrError`` on bad input."""

    __slots__ = ("_data", "_end", "_pos")

    def __init__(self, data: bytes | bytearray | memoryview, offset: int = 0) -> None:
        self._data = data
        self._end = len(data)
        self._pos = offset

    @property
    def position(self) -> int:
        return self._pos

    @property
    def remaining(self) -> int:
        return self._end - self._pos

    def _need(self, n: int, what: str) -> int:
        """Claims ``n`` bytes and returns where they start; checked before any slicing."""
        pos = self._pos
        if n > self._end - pos:
            raise XdrError(
                f"truncated {what}: need {n} bytes at offset {pos}, have {self._end - pos}"
            )
        self._pos = pos + n
        return pos

    def unpack_uint(self) -> int:
        value: int = _U32.unpack_from(self._data, self._need(4, "uint32"))[0]
        return value

    def unpack_int(self) -> int:
        value: int = _I32.unpack_from(self._data, self._need(4, "int32"))[0]
        return value

    def unpack_uhyper(self) -> int:
        value: int = _U64.unpack_from(self._data, self._need(8, "uint64"))[0]
        return value

    def unpack_hyper(self) -> int:
        value: int = _I64.unpack_from(self._data, self._need(8, "int64"))[0]
        return value

    def unpack_bool(self) -> bool:
        value = self.unpack_uint()
        if value > 1:
            raise XdrError(f"bool must be 0 or 1, got {value} at offset {self._pos - 4}")
        return value == 1

    def unpack_struct(self, st: struct.Struct) -> tuple[Any, ...]:
        """Several fixed-size fields at once: the fast path for attribute blocks."""
        return st.unpack_from(self._data, self._need(st.size, "fields"))

    def unpack_fopaque(self, n: int) -> bytes:
        start = self._need(_padded(n), "fixed opaque")
        return bytes(self._data[start : start + n])

    def unpack_opaque(self, max_len: int = MAX_OPAQUE) -> bytes:
        n = self.unpack_uint()
        if n > max_len:
            raise XdrError(f"opaque length {n} at offset {self._pos - 4} exceeds bound {max_len}")
        return self.unpack_fopaque(n)

    def unpack_string(self, max_len: int = MAX_STRING) -> str:
        return self.unpack_opaque(max_len).decode("utf-8", "surrogateescape")

    def unpack_array(
        self, unpack_item: Callable[[], T], max_count: int = MAX_ARRAY, min_item_size: int = 4
    ) -> list[T]:
        """Variable-length array; the count is checked against the bound and the remaining
        bytes (each item takes at least ``min_item_size``) before anything is built."""
        n = self.unpack_uint()
        if n > max_count:
            raise XdrError(f"array count {n} exceeds bound {max_count}")
        if n * min_item_size > self._end - self._pos:
            raise XdrError(f"array count {n} exceeds the remaining {self.remaining} bytes")
        return [unpack_item() for _ in range(n)]

    def unpack_list(self, unpack_item: Callable[[], T], max_count: int = MAX_ARRAY) -> list[T]:
        """XDR optional-data linked list (``*next`` pointers), at most ``max_count`` items."""
        items: list[T] = []
        while self.unpack_bool():
            if len(items) >= max_count:
                raise XdrError(f"linked list longer than its bound {max_count}")
            items.append(unpack_item())
        return items

    def unpack_optional(self, unpack_item: Callable[[], T]) -> T | None:
        """``*item`` / ``union switch (bool)``: the item if the flag is TRUE, else None."""
        return unpack_item() if self.unpack_bool() else None

    def done(self) -> None:
        """Raises ``XdrError`` if bytes remain (for callers that want strict decoding)."""
        if self._pos != self._end:
            raise XdrError(f"{self._end - self._pos} unexpected bytes after offset {self._pos}")
