"""Parses and edits autofs master maps and sun-format file maps without losing a byte.

``parse_map`` and ``parse_master`` read text into items that keep their exact text, so
``render()`` of an unchanged file returns it byte for byte, and edits re-render only the
entries they change. Parsing never raises: what autofs 5.1.8 rejects or misreads is
collected as ``Problem(line, message)``. New lines come from the renderers, which refuse
values that would corrupt a map (``MapValueError``).

Read files as bytes and decode with ``decode_map`` (``surrogateescape``) so that any byte
survives the round trip; write ``encode_map(text)`` back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from nfs_failover.steering.autofs_items import read_map_items, read_master_items
from nfs_failover.steering.autofs_model import (
    BadEntry,
    Blank,
    Comment,
    Host,
    Include,
    Location,
    MapEntry,
    MapItem,
    MapValueError,
    MasterEntry,
    MasterItem,
    Problem,
)
from nfs_failover.steering.autofs_render import (
    USE_WEIGHT_ONLY,
    preference_entry,
    render_entry,
    render_master_line,
)

__all__ = [
    "USE_WEIGHT_ONLY",
    "BadEntry",
    "Blank",
    "Comment",
    "Host",
    "Include",
    "Location",
    "MapEntry",
    "MapFile",
    "MapItem",
    "MapValueError",
    "MasterEntry",
    "MasterFile",
    "MasterItem",
    "Problem",
    "decode_map",
    "encode_map",
    "parse_map",
    "parse_master",
    "preference_entry",
    "render_entry",
    "render_master_line",
]


def decode_map(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def encode_map(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


# -- files -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MapFile:
    """A sun-format file map (indirect, or direct when its keys are absolute paths)."""

    items: tuple[MapItem, ...]
    problems: tuple[Problem, ...]
    direct: bool

    @property
    def entries(self) -> tuple[MapEntry, ...]:
        return tuple(item for item in self.items if isinstance(item, MapEntry))

    @property
    def includes(self) -> tuple[Include, ...]:
        return tuple(item for item in self.items if isinstance(item, Include))

    def render(self) -> str:
        return "".join(item.raw for item in self.items)

    def entry(self, key: str) -> MapEntry | None:
        """The entry the daemon uses for ``key``: the first one in the file."""
        return next((entry for entry in self.entries if entry.key == key), None)

    def with_entry(
        self, key: str, options: Sequence[str], locations: Sequence[Location]
    ) -> MapFile:
        """This map with ``key`` set: its first entry replaced in place (later duplicates
        and unusable lines for it removed, so the daemon has one answer), or appended."""
        return self._with_line(key, render_entry(key, options, locations))

    def with_preference_entry(
        self, key: str, options: Sequence[str], replicas: Sequence[tuple[str, str]]
    ) -> MapFile:
        """``with_entry`` for replicas tried in the order given (``preference_entry``)."""
        return self._with_line(key, preference_entry(key, options, replicas))

    def without_entry(self, key: str) -> MapFile:
        """This map without any line for ``key``."""
        text = _edited(self.items, lambda item: _map_key(item) == key, None, _newline(self))
        return parse_map(text, direct=self.direct)

    def _with_line(self, key: str, line: str) -> MapFile:
        text = _edited(self.items, lambda item: _map_key(item) == key, line, _newline(self))
        # The first entry of an empty map decides whether it is a direct one.
        direct = self.direct if self.entries else key.startswith("/")
        edited = parse_map(text, direct=direct)
        entry = edited.entry(key)
        if entry is None or entry.raw.rstrip("\r\n") != line:
            raise MapValueError(f'entry "{key}" would not take effect in this map: {line!r}')
        return edited


@dataclass(frozen=True)
class MasterFile:
    """A master map (``auto.master`` or a drop-in under ``auto.master.d``)."""

    items: tuple[MasterItem, ...]
    problems: tuple[Problem, ...]

    @property
    def entries(self) -> tuple[MasterEntry, ...]:
        return tuple(item for item in self.items if isinstance(item, MasterEntry))

    @property
    def includes(self) -> tuple[Include, ...]:
        return tuple(item for item in self.items if isinstance(item, Include))

    def render(self) -> str:
        return "".join(item.raw for item in self.items)

    def entry(self, mount_point: str) -> MasterEntry | None:
        """The line the daemon uses for ``mount_point``: the first one."""
        return next((e for e in self.entries if e.mount_point == mount_point), None)

    def with_entry(
        self, mount_point: str, map_path: str, options: Sequence[str] = ()
    ) -> MasterFile:
        """This master map with ``mount_point`` served by ``map_path``: its first line
        replaced in place (later ones removed), or appended."""
        line = render_master_line(mount_point, map_path, options)
        text = _edited(self.items, _master_matcher(mount_point), line, _newline(self))
        edited = parse_master(text)
        entry = edited.entry(mount_point)
        if entry is None or entry.raw.rstrip("\r\n") != line:
            raise MapValueError(f'master line for "{mount_point}" would not take effect: {line!r}')
        return edited

    def without_entry(self, mount_point: str) -> MasterFile:
        """This master map without any line for ``mount_point``."""
        return parse_master(_edited(self.items, _master_matcher(mount_point), None, _newline(self)))


def _map_key(item: MapItem) -> str | None:
    return item.key if isinstance(item, MapEntry | BadEntry) else None


def _master_matcher(mount_point: str) -> Callable[[MasterItem], bool]:
    def matches(item: MasterItem) -> bool:
        if isinstance(item, MasterEntry):
            return item.mount_point == mount_point
        return isinstance(item, BadEntry) and item.key == mount_point

    return matches


def _newline(file: MapFile | MasterFile) -> str:
    text = file.render()
    return "\r\n" if text.count("\r\n") * 2 > text.count("\n") else "\n"


class _Raw(Protocol):
    @property
    def raw(self) -> str: ...


_ItemT = TypeVar("_ItemT", bound=_Raw)


def _edited(
    items: Sequence[_ItemT], matches: Callable[[_ItemT], bool], line: str | None, newline: str
) -> str:
    out: list[str] = []
    placed = line is None
    for item in items:
        if not matches(item):
            out.append(item.raw)
        elif not placed:
            ending = item.raw[len(item.raw.rstrip("\r\n")) :]
            out.append(f"{line}{ending}")
            placed = True
    if not placed:
        if out and not out[-1].endswith("\n"):
            out[-1] += newline
        out.append(f"{line}{newline}")
    return "".join(out)


# -- reading -----------------------------------------------------------------------------


def parse_map(text: str, *, direct: bool | None = None) -> MapFile:
    """Read a sun-format file map. ``direct`` says whether keys are absolute paths; by
    default it is guessed from the keys (most of them absolute: direct)."""
    items, problems, is_direct = read_map_items(text, direct)
    return MapFile(items, problems, is_direct)


def parse_master(text: str) -> MasterFile:
    """Read a master map: ``mountpoint [type[,format]:]map [options]`` lines and includes."""
    items, problems = read_master_items(text)
    return MasterFile(items, problems)
