"""The mount table: ``/proc/self/mountinfo`` (proc(5)) read and parsed, never a server asked.

Owns the parse of mountinfo lines with their escapes, the bounds on what is read, and
which mounts are NFS.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from nfs_failover.errors import SteeringError
from nfs_failover.steering.machine import Machine

__all__ = [
    "MAX_LINE_BYTES",
    "MAX_MOUNTINFO_BYTES",
    "MOUNTINFO",
    "NFS_TYPES",
    "MountInfo",
    "MountTable",
    "SkippedLine",
    "nfs_mounts",
    "parse_mountinfo",
    "read_mountinfo_file",
    "read_mounts",
]

log = logging.getLogger(__name__)

MOUNTINFO = Path("/proc/self/mountinfo")
NFS_TYPES = frozenset({"nfs", "nfs4"})
MAX_MOUNTINFO_BYTES = 16 * 1024 * 1024  # about 100,000 mounts
MAX_LINE_BYTES = 64 * 1024  # two escaped PATH_MAX paths and their options


@dataclass(frozen=True)
class MountInfo:
    """One line of mountinfo (proc(5)), with its paths unescaped."""

    mount_id: int
    parent_id: int
    major: int
    minor: int
    root: str
    mount_point: str
    options: tuple[str, ...]
    optional_fields: tuple[str, ...]
    fstype: str
    source: str
    super_options: tuple[str, ...]

    @property
    def is_nfs(self) -> bool:
        return self.fstype in NFS_TYPES


@dataclass(frozen=True)
class SkippedLine:
    """A mountinfo line that could not be read, and why."""

    number: int
    reason: str
    text: str  # the line's start, for the log


@dataclass(frozen=True)
class MountTable:
    mounts: tuple[MountInfo, ...]
    skipped: tuple[SkippedLine, ...]


_ESCAPE = re.compile(rb"\\([0-7]{3})")


def _unescape(field: bytes) -> str:
    """``\\040`` and friends back to their bytes; undecodable bytes kept as surrogates."""
    raw = _ESCAPE.sub(lambda m: bytes([int(m.group(1), 8) & 0xFF]), field)
    return os.fsdecode(raw)


def _parse_line(line: bytes) -> MountInfo | str:
    """The mount a line describes, or the reason it cannot be read."""
    fields = line.split(b" ")
    try:
        separator = fields.index(b"-", 6)
    except ValueError:
        return 'no "-" separator after the six leading fields'
    tail = fields[separator + 1 :]
    if len(tail) != 3:
        return f"expected 3 fields after the separator, got {len(tail)}"
    mount_id, parent_id, device, root, mount_point, options = fields[:6]
    major, colon, minor = device.partition(b":")
    numbers = (mount_id, parent_id, major, minor)
    if not colon or not all(n.isdigit() and len(n) <= 20 for n in numbers):
        return "mount id, parent id or major:minor is not a number"
    point = _unescape(mount_point)
    if not point.startswith("/"):
        return "mount point is not an absolute path"
    fstype, source, super_options = tail
    return MountInfo(
        mount_id=int(mount_id),
        parent_id=int(parent_id),
        major=int(major),
        minor=int(minor),
        root=_unescape(root),
        mount_point=point,
        options=tuple(_unescape(options).split(",")),
        optional_fields=tuple(_unescape(f) for f in fields[6:separator] if f),
        fstype=_unescape(fstype),
        source=_unescape(source),
        super_options=tuple(_unescape(super_options).split(",")),
    )


def parse_mountinfo(data: bytes) -> MountTable:
    """Every mount in mountinfo text; a malformed line is skipped with its reason."""
    mounts: list[MountInfo] = []
    skipped: list[SkippedLine] = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        shown = os.fsdecode(line[:200])
        if len(line) > MAX_LINE_BYTES:
            skipped.append(SkippedLine(number, f"longer than {MAX_LINE_BYTES} bytes", shown))
            continue
        parsed = _parse_line(line.rstrip(b"\r"))
        if isinstance(parsed, str):
            skipped.append(SkippedLine(number, parsed, shown))
        else:
            mounts.append(parsed)
    return MountTable(tuple(mounts), tuple(skipped))


def read_mountinfo_file(mountinfo: Path = MOUNTINFO) -> bytes:
    """The bytes of ``mountinfo``, one more than ``MAX_MOUNTINFO_BYTES`` at most; raises
    ``SteeringError`` if it cannot be read."""
    try:
        with mountinfo.open("rb") as file:
            return file.read(MAX_MOUNTINFO_BYTES + 1)
    except OSError as exc:
        raise SteeringError(f"cannot read {mountinfo}: {exc.strerror or exc}") from None


def read_mounts(mountinfo: Path = MOUNTINFO, *, machine: Machine | None = None) -> list[MountInfo]:
    """All mounts in ``mountinfo`` (or in the mount table of ``machine``); never contacts a
    server.

    Malformed lines are logged and skipped. Raises ``SteeringError`` if the table cannot be
    read; reads at most ``MAX_MOUNTINFO_BYTES`` (a longer table is logged as cut short).
    """
    data = machine.read_mountinfo() if machine else read_mountinfo_file(mountinfo)
    if machine:
        mountinfo = Path(f"{machine.name}:{MOUNTINFO}")
    if len(data) > MAX_MOUNTINFO_BYTES:
        log.warning("%s: longer than %d bytes; the rest is not read", mountinfo, len(data) - 1)
        data = data[: data.rfind(b"\n", 0, MAX_MOUNTINFO_BYTES) + 1]
    table = parse_mountinfo(data)
    for line in table.skipped:
        log.warning("%s: line %d skipped: %s: %r", mountinfo, line.number, line.reason, line.text)
    return list(table.mounts)


def nfs_mounts(mounts: Iterable[MountInfo]) -> list[MountInfo]:
    """The NFS mounts (``nfs``, ``nfs4``) among ``mounts``."""
    return [mount for mount in mounts if mount.is_nfs]
