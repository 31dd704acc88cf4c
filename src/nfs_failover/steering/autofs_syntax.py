"""Reads the value of one record: a sun map entry's options and locations, or a master map
line's map and options, as automount 5.1.8 splits them, with the problems it would hit.

Problems are sentences without a line number; the caller knows the line.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

from nfs_failover.steering.autofs_model import Host, Location

_SPACE = " \t\n\v\f\r"
_HOST_CHARS = frozenset(string.ascii_letters + string.digits + "-._,()#@:[]%")
_CASCADE = " (autofs 5.1.8 may then also misread the entries after it in this file)"


# -- quoting -----------------------------------------------------------------------------


def dequote(text: str) -> str:
    """Drop the double quotes and backslash escapes, as autofs does before using a value."""
    out: list[str] = []
    quoted = escaped = False
    for ch in text:
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == '"':
            quoted = not quoted
        elif ch == "\\" and not quoted:
            escaped = True
        else:
            out.append(ch)
    return "".join(out)


def next_chunk(text: str, *, expect_colon: bool) -> str:
    """The first chunk of ``text`` (which starts at a non-blank): up to a blank outside
    quotes, except that while a location still waits for its ``:/`` blanks and tabs do not
    end it (so ``ho st:/x`` is one, invalid, location; the daemon does the same)."""
    quoted = escaped = False
    for at, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == ":" and text[at + 1 : at + 2] == "/":
            expect_colon = False
        elif ch in _SPACE and not quoted and not (expect_colon and ch in " \t"):
            return text[:at]
    return text


# -- sun map entries ---------------------------------------------------------------------


@dataclass(frozen=True)
class SunValue:
    options: tuple[str, ...]
    locations: tuple[Location, ...]
    multi_mount: bool
    problems: tuple[str, ...]


def parse_sun_value(key: str, value: str) -> SunValue:
    """Options, locations and problems of the map entry ``key value``."""
    options: list[str] = []
    rest = value.lstrip(_SPACE)
    while rest.startswith("-"):
        chunk = next_chunk(rest, expect_colon=False)
        options += [o for o in dequote(chunk[1:]).split(",") if o]
        rest = rest[len(chunk) :].lstrip(_SPACE)
    if not rest:
        return SunValue(
            tuple(options), (), False, (f'entry "{key}" has no location; autofs cannot mount it',)
        )
    chunks = _location_chunks(rest)
    if _is_multi_mount(rest, chunks):
        return SunValue(tuple(options), (), True, ())
    problems: list[str] = []
    locations = tuple(_location(key, dequote(chunk), problems) for chunk in chunks)
    return SunValue(tuple(options), locations, False, tuple(problems))


def _location_chunks(text: str) -> list[str]:
    chunks: list[str] = []
    while text:
        chunk = next_chunk(text, expect_colon=":/" in text)
        chunks.append(chunk)
        text = text[len(chunk) :].lstrip(_SPACE)
    return chunks


def _is_multi_mount(rest: str, chunks: list[str]) -> bool:
    if rest.lstrip('"').startswith("/"):
        return True
    return any(chunk.lstrip('"')[:1] in ("/", "-") for chunk in chunks[1:])


def _location(key: str, text: str, problems: list[str]) -> Location:
    if text.startswith(":") or ":" not in text:
        # ":/dev/sda1", "://server/share", or a location mount gets as written.
        return Location((), text[1:] if text.startswith(":") else text)
    split = text.find(":/")
    if split < 0:
        problems.append(f'location "{text}" has no ":/" after its host')
        return Location((), text)
    host_part, path = text[:split], text[split + 1 :]
    if "$" not in host_part and "&" not in host_part:
        bad = sorted({ch for ch in host_part if ch not in _HOST_CHARS})
        if bad:
            shown = ", ".join(f'"{ch}"' for ch in bad)
            problems.append(f'location "{text}" has {shown} in its host part')
            return Location((), text)
    return Location(_hosts(host_part, text, problems), path)


_HOST = re.compile(r"(?P<name>\[[^\]]*\]|[^()\[\]]*)(?:\((?P<weight>[^()]*)\))?")


def _hosts(host_part: str, text: str, problems: list[str]) -> tuple[Host, ...]:
    hosts: list[Host] = []
    for piece in _split_top_level(host_part):
        match = _HOST.fullmatch(piece)
        if match is None:
            problems.append(f'host "{piece}" of location "{text}" has unbalanced brackets')
            hosts.append(Host(piece))
            continue
        name, weight = match["name"], match["weight"]
        if not name:
            problems.append(f'location "{text}" has an empty host name')
        if weight is not None and not weight.isdigit():
            problems.append(f'weight "{weight}" of host "{name}" in "{text}" is not a number')
            weight = None
        hosts.append(Host(name, int(weight) if weight is not None else None))
    return tuple(hosts)


def _split_top_level(host_part: str) -> list[str]:
    pieces, depth, start = [], 0, 0
    for at, ch in enumerate(host_part):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(depth - 1, 0)
        elif ch == "," and depth == 0:
            pieces.append(host_part[start:at])
            start = at + 1
    pieces.append(host_part[start:])
    return pieces


# -- master map lines --------------------------------------------------------------------

MAP_TYPES = frozenset(
    [
        "file",
        "program",
        "exec",
        "sss",
        "yp",
        "nis",
        "nisplus",
        "ldap",
        "ldaps",
        "hesiod",
        "userdir",
        "dir",
        "multi",
    ]
)
MAP_FORMATS = frozenset({"sun", "hesiod", "amd"})
_TYPE_PREFIX = re.compile(
    r"(?P<type>[A-Za-z_][\w-]*)(?:,(?P<format>[A-Za-z]+))?:(?P<rest>.*)", re.S
)
_BARE_TYPE = re.compile(r"(?P<type>[a-z]+)(?:,(?P<format>[a-z]+))?")
_FLAGS = frozenset(
    [
        "-g",
        "--ghost",
        "-v",
        "--verbose",
        "-d",
        "--debug",
        "-w",
        "--use-weight-only",
        "-r",
        "--random-multimount-selection",
        "--slashify-colons",
        "--no-slashify-colons",
    ]
) | {
    dash + word
    for dash in ("", "-")
    for word in [
        "symlink",
        "nobind",
        "nobrowse",
        "browse",
        "shared",
        "slave",
        "private",
        "strictexpire",
    ]
}
_VALUED = re.compile(
    r"(?P<flag>--timeout|-t|--negative-timeout|-n|--mode)[ \t]*(?:=[ \t]*)?(?P<num>\d+)"
)
_VALUED_BARE = re.compile(r"(?P<flag>--timeout|-t|--negative-timeout|-n|--mode)(?=$|[\s,=])")
_MACRO = re.compile(r"-D[ \t]*[A-Za-z_][\w.-]*=[^\s,]*")
_WORD = re.compile(r'(?:[^\s,"\\]|\\.|"[^"]*")+', re.S)


@dataclass(frozen=True)
class MasterValue:
    map_name: str
    map_type: str | None
    map_format: str | None
    options: tuple[str, ...]
    problems: tuple[str, ...]
    syntax_error: str | None


def parse_master_value(value: str) -> MasterValue:
    """The map, its type and format, and the options of a master map line's value."""
    rest = value.lstrip(_SPACE)
    raw = next_chunk(rest, expect_colon=False)  # the map name as written, escapes and all
    rest = rest[len(raw) :].lstrip(_SPACE)
    map_type, map_format = None, None
    if raw == "-xfn":
        return _refused("X/Open Federated Naming maps (-xfn) are not supported")
    if raw in ("-hosts", "-null"):
        map_type = raw[1:]
    elif (typed := _TYPE_PREFIX.fullmatch(raw)) is not None:
        map_type, map_format, raw = typed["type"], typed["format"], typed["rest"]
        if map_type not in MAP_TYPES or (map_format and map_format not in MAP_FORMATS):
            return _refused(f'unknown map type "{typed.group(0).partition(":")[0]}"' + _CASCADE)
        if map_type == "multi":
            return MasterValue((raw + " " + rest).strip(), "multi", map_format, (), (), None)
        if not raw and rest:
            raw = next_chunk(rest, expect_colon=False)
            rest = rest[len(raw) :].lstrip(_SPACE)
    elif (bare := _BARE_TYPE.fullmatch(raw)) and bare["type"] in MAP_TYPES and rest:
        map_type, map_format = bare["type"], bare["format"]
        raw = next_chunk(rest, expect_colon=False)
        rest = rest[len(raw) :].lstrip(_SPACE)
    name = dequote(raw)
    if map_type not in ("ldap", "ldaps") and ":" in re.sub(r"\\.", "", raw):
        return _refused(f'map name "{name}" holds a ":" (write it as "\\:")' + _CASCADE)
    if not name:
        return _refused("no map name")
    options, problems, error = master_options(rest)
    return MasterValue(name, map_type, map_format, options, problems, error)


def _refused(message: str) -> MasterValue:
    return MasterValue("", None, None, (), (), message)


def master_options(text: str) -> tuple[tuple[str, ...], tuple[str, ...], str | None]:
    """Options, problems, and the syntax error (if any) of master map options ``text``."""
    tokens: list[str] = []
    problems: list[str] = []
    at, after_comma = 0, False
    while True:
        while at < len(text) and text[at] in _SPACE:
            at += 1
        if at == len(text):
            break
        if text[at] == ",":
            if not tokens or after_comma:
                return (), (), "empty option between commas" + _CASCADE
            after_comma, at = True, at + 1
            continue
        token, at, error = _option_token(text, at, problems)
        if error:
            return (), (), error + _CASCADE
        tokens.append(token)
        after_comma = False
    if after_comma:
        return (), (), "options end with a comma" + _CASCADE
    return tuple(tokens), tuple(problems), None


def _option_token(text: str, at: int, problems: list[str]) -> tuple[str, int, str | None]:
    if valued := _VALUED.match(text, at):
        return f"{valued['flag']}={valued['num']}", valued.end(), None
    if bare := _VALUED_BARE.match(text, at):
        flag = bare["flag"]
        kind = "an octal mode" if flag == "--mode" else "a number of seconds"
        word = _WORD.match(text, at)
        token = word.group(0) if word else flag
        problems.append(
            f'{flag} needs {kind}: autofs 5.1.8 passes "{token.lstrip("-")}" to mount '
            "instead and keeps its default"
        )
        return token, at + len(token), None
    if macro := _MACRO.match(text, at):
        return macro.group(0), macro.end(), None
    word = _WORD.match(text, at)
    token = word.group(0) if word else text[at]
    if word is None or token.isdigit() or token.startswith("="):
        return "", at, f'"{token}" is not an option'
    if token.startswith("--") and token not in _FLAGS:
        problems.append(
            f'unknown option "{token}": autofs 5.1.8 passes "{token.lstrip("-")}" to mount'
        )
    return dequote(token), word.end(), None
