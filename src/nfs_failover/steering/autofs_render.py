"""Renders new autofs map lines from values, refusing any value that would corrupt the map.

Each renderer returns one line without its line end and writes nothing. A refused value
raises ``MapValueError`` with a one-line message naming it. What is accepted is read back
with the same reader ``lint`` uses, so a rendered line always means what its values say.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from nfs_failover.steering.autofs_model import Host, Location, MapValueError
from nfs_failover.steering.autofs_scan import ENTRY_MAX_BYTES, KEY_MAX_BYTES, Kind, read_records
from nfs_failover.steering.autofs_syntax import master_options, parse_sun_value

USE_WEIGHT_ONLY = "use-weight-only"
"""The pseudo-option that makes autofs order replicas by weight alone (hyphens: the
underscore spelling is not recognised and reaches mount.nfs as an unknown option)."""

_NAME = re.compile(r"[A-Za-z0-9._-]+")
_IPV6 = re.compile(r"\[[0-9A-Fa-f:.]+\]")
_PATH = re.compile(r"/[A-Za-z0-9._/+@%=~-]*")
_OPTION = re.compile(r"[A-Za-z0-9._=:/+@%-]+")
_MASTER_OPTION = re.compile(r"-{0,2}[A-Za-z0-9._=:/+@%-]+")
_WEIGHT_MAX = 1_000_000


def render_entry(key: str, options: Sequence[str], locations: Sequence[Location]) -> str:
    """``key [-opt,opt] location ...`` for an indirect key, or a direct map's absolute key.

    Options are mount options without the leading ``-`` (``fstype=nfs``, ``rw``, or a
    comma list of them). A location without hosts renders as ``:/path``.
    """
    _check_key(key)
    flat = _check_options(options, "option")
    if not locations:
        raise MapValueError(f'entry "{key}": at least one location is needed')
    if ",".join(flat).count(":") > 1:
        raise MapValueError(
            f"options {','.join(flat)!r} hold more than one ':'; autofs turns the others into '/'"
        )
    wanted = tuple(Location(tuple(loc.hosts), loc.path) for loc in locations)
    parts = [key]
    if flat:
        parts.append("-" + ",".join(flat))
    parts += [_render_location(location) for location in wanted]
    line = " ".join(parts)
    _check_length(line, f'entry "{key}"')
    _check_reads_back(line, key, flat, wanted)
    return line


HEADER = "# Written by nfs-failover from the desired state; edits here are overwritten.\n"


def foreign_file(path: Path) -> bool:
    """Whether ``path`` holds something nfs-failover did not write (no HEADER line first):
    a user's map, /etc/passwd, a folder. Such a file is never overwritten."""
    try:
        with open(path, "rb") as file:
            first = file.readline(len(HEADER) + 1)
    except FileNotFoundError:
        return False
    except OSError:  # a folder, or unreadable: not ours to replace
        return True
    return first != HEADER.encode()


def map_host(host: str) -> str:
    """A server as a map location names it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def preference_entry(key: str, options: Sequence[str], replicas: Sequence[tuple[str, str]]) -> str:
    """A replicated entry whose order the daemon honours: ``replicas`` are
    ``(host, path)`` pairs, most preferred first.

    Without weights automount tries replicas in order of ping time, not list order. With
    ``use-weight-only`` it orders them by weight alone, lower first, so the replicas get
    weights 1, 2, 3... in the order given. A single replica renders plainly, with neither.
    """
    if not replicas:
        raise MapValueError(f'entry "{key}": at least one replica is needed')
    seen: set[tuple[str, str]] = set()
    for host, path in replicas:
        if (host, path) in seen:
            raise MapValueError(f'entry "{key}": replica "{host}:{path}" is listed twice')
        seen.add((host, path))
    flat = _check_options(options, "option")
    for option in flat:
        if option.replace("_", "-") in (USE_WEIGHT_ONLY, "no-" + USE_WEIGHT_ONLY):
            raise MapValueError(
                f'entry "{key}": option "{option}" is set by the ordering itself; leave it out'
            )
    if len(replicas) == 1:
        host, path = replicas[0]
        return render_entry(key, flat, [Location((Host(host),), path)])
    locations = [
        Location((Host(host, weight),), path)
        for weight, (host, path) in enumerate(replicas, start=1)
    ]
    return render_entry(key, [*flat, USE_WEIGHT_ONLY], locations)


def render_master_line(mount_point: str, map_path: str, options: Sequence[str] = ()) -> str:
    """``mount_point map_path [options]`` for a file map; ``mount_point`` is an absolute
    path or ``/-`` (direct map). Options are master map options (``--timeout=10``,
    ``browse``, ``rw,soft``)."""
    if mount_point != "/-":
        _check_path(mount_point, "mount point")
    _check_path(map_path, "map path")
    for option in options:
        _check_master_option(option)
    line = " ".join([mount_point, map_path, *options])
    _check_length(line, f'master line for "{mount_point}"')
    _, problems, error = master_options(" ".join(options))
    if error or problems:
        raise MapValueError(f"master options {' '.join(options)!r}: {error or problems[0]}")
    return line


# -- checks ------------------------------------------------------------------------------


def _check_text(value: str, what: str) -> None:
    for ch in value:
        if ch.isspace() or not ch.isprintable():
            raise MapValueError(f"{what} {value!r} holds whitespace or a control character")
        if ch in "#\"'\\&$`;|<>*?":
            raise MapValueError(f"{what} {value!r} holds {ch!r}")


def _check_key(key: str) -> None:
    _check_text(key, "key")
    if not key:
        raise MapValueError("key is empty")
    if key.startswith(("-", "+")):
        raise MapValueError(f"key {key!r} starts with {key[0]!r}")
    if len(key.encode()) > KEY_MAX_BYTES:
        raise MapValueError(f"key {key[:40]!r}... is longer than {KEY_MAX_BYTES} bytes")
    if key.startswith("/"):
        _check_path(key, "direct map key")
    elif "/" in key:
        raise MapValueError(f"key {key!r} holds '/': an indirect map key is one path component")
    elif key in (".", ".."):
        raise MapValueError(f"key {key!r} is not a directory name")


def _check_options(options: Sequence[str], what: str) -> tuple[str, ...]:
    flat: list[str] = []
    for option in options:
        _check_text(option, what)
        for part in option.split(","):
            if not part:
                raise MapValueError(f"{what} {option!r} has an empty item")
            if part.startswith("-"):
                raise MapValueError(f"{what} {part!r} starts with '-'")
            if not _OPTION.fullmatch(part):
                raise MapValueError(f"{what} {part!r} holds a character maps do not allow")
            flat.append(part)
    return tuple(flat)


def _check_master_option(option: str) -> None:
    _check_text(option, "master option")
    parts = option.split(",")
    if not all(parts):
        raise MapValueError(f"master option {option!r} has an empty item")
    for index, part in enumerate(parts):
        if index and part.startswith("-"):
            raise MapValueError(f"master option {part!r} in {option!r} starts with '-'")
        if not _MASTER_OPTION.fullmatch(part):
            raise MapValueError(f"master option {part!r} holds a character maps do not allow")


def _check_path(path: str, what: str) -> None:
    _check_text(path, what)
    if not path.startswith("/"):
        raise MapValueError(f"{what} {path!r} is not an absolute path")
    if not _PATH.fullmatch(path):
        raise MapValueError(f"{what} {path!r} holds a character maps do not allow")


def _check_host(host: Host) -> None:
    _check_text(host.name, "host")
    if host.name.startswith("-"):
        raise MapValueError(f"host {host.name!r} starts with '-'")
    if not (_NAME.fullmatch(host.name) or _IPV6.fullmatch(host.name)):
        raise MapValueError(
            f"host {host.name!r}: use letters, digits, '-', '.', '_', or an IPv6 address in []"
        )
    weight = host.weight
    if weight is not None and (
        isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= _WEIGHT_MAX
    ):
        raise MapValueError(f"weight {weight!r} of host {host.name!r} is not 0..{_WEIGHT_MAX}")


def _render_location(location: Location) -> str:
    _check_path(location.path, "path")
    for host in location.hosts:
        _check_host(host)
    hosts = ",".join(
        host.name if host.weight is None else f"{host.name}({host.weight})"
        for host in location.hosts
    )
    return f"{hosts}:{location.path}"


def _check_length(line: str, what: str) -> None:
    if len(line.encode()) > ENTRY_MAX_BYTES:
        raise MapValueError(f"{what} is longer than {ENTRY_MAX_BYTES} bytes")


def _check_reads_back(
    line: str, key: str, options: tuple[str, ...], locations: tuple[Location, ...]
) -> None:
    records = read_records(line + "\n")
    if len(records) == 1 and records[0].kind is Kind.ENTRY and records[0].key == key:
        value = parse_sun_value(key, records[0].value)
        if (value.options, value.locations, value.multi_mount) == (options, locations, False):
            return
    raise MapValueError(f'entry "{key}" would not read back as written: {line!r}')
