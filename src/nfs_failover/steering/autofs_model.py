"""The typed model of autofs maps: entries, locations, hosts, and the lines around them.

Every item keeps ``raw``, its exact text (all the physical lines it covers, with their line
ends), so that a parsed file renders back byte for byte. Values are read-only.
"""

from __future__ import annotations

from dataclasses import dataclass

from nfs_failover.errors import ConfigError


class MapValueError(ConfigError):
    """A value was refused: written into an autofs map it would corrupt the map or smuggle
    options into it. Nothing was written; the message names the value."""

    def __init__(self, message: str) -> None:
        super().__init__([message])
        self.message = message


@dataclass(frozen=True)
class Problem:
    """Something autofs rejects or misreads, on a 1-based ``line`` (0: the file itself)."""

    line: int
    message: str


@dataclass(frozen=True)
class Host:
    """One server of a location; ``weight`` as written in ``host(weight)``, lower is preferred."""

    name: str
    weight: int | None = None


@dataclass(frozen=True)
class Location:
    """``host[,host...]:/path``; no hosts for a local ``:/path`` or a location autofs passes on
    to mount as written (``path`` then holds it whole)."""

    hosts: tuple[Host, ...]
    path: str


@dataclass(frozen=True)
class MapEntry:
    """A sun-format map entry: ``key [-options] location [location ...]``.

    A multi-mount entry (``key /sub loc /sub2 loc2``) is recognised but not interpreted:
    ``multi_mount`` is true, ``locations`` is empty and ``raw`` holds it untouched.
    """

    key: str
    options: tuple[str, ...]
    locations: tuple[Location, ...]
    line: int
    raw: str
    multi_mount: bool = False


@dataclass(frozen=True)
class MasterEntry:
    """A master map line: ``mount_point [type[,format]:]map [options]``."""

    mount_point: str
    map_name: str
    map_type: str | None
    options: tuple[str, ...]
    line: int
    raw: str
    map_format: str | None = None

    @property
    def timeout(self) -> int | None:
        """The expiry (idle unmount) time in seconds this line sets, if it sets one."""
        return _seconds(self.options, ("--timeout", "-t"))

    @property
    def negative_timeout(self) -> int | None:
        """How long in seconds a failed key stays cached, if this line sets it."""
        return _seconds(self.options, ("--negative-timeout", "-n"))


@dataclass(frozen=True)
class Include:
    """``+[type:]map``: another map read in place of this line."""

    name: str
    line: int
    raw: str = ""


@dataclass(frozen=True)
class Comment:
    """A comment: ``#`` first on its line after blanks, with any lines autofs swallows into it."""

    line: int
    raw: str


@dataclass(frozen=True)
class Blank:
    """A line of blanks (or nothing) between entries."""

    line: int
    raw: str


@dataclass(frozen=True)
class BadEntry:
    """Lines autofs does not use as an entry; ``message`` says why (also in the problems)."""

    key: str | None
    line: int
    raw: str
    message: str


MapItem = MapEntry | Include | Comment | Blank | BadEntry
MasterItem = MasterEntry | Include | Comment | Blank | BadEntry


def _seconds(options: tuple[str, ...], flags: tuple[str, ...]) -> int | None:
    found: int | None = None
    for option in options:
        name, _, value = option.partition("=")
        if name in flags and value.isdigit():
            found = int(value)  # the last one wins, as in automount
    return found
