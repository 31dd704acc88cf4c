"""Turns the daemon's records into the items of a map file, and what autofs 5.1.8 rejects
or misreads in them into problems with their line numbers.

Items cover every physical line exactly once, in order, so their texts joined are the file.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from nfs_failover.steering.autofs_model import (
    BadEntry,
    Blank,
    Comment,
    Include,
    MapEntry,
    MapItem,
    MasterEntry,
    MasterItem,
    Problem,
)
from nfs_failover.steering.autofs_scan import (
    ENTRY_MAX_BYTES,
    KEY_MAX_BYTES,
    Kind,
    Record,
    Why,
    read_records,
)
from nfs_failover.steering.autofs_syntax import dequote, parse_master_value, parse_sun_value


def read_map_items(
    text: str, direct: bool | None
) -> tuple[tuple[MapItem, ...], tuple[Problem, ...], bool]:
    """Items and problems of a sun-format file map, and whether it is a direct map (guessed
    from its keys when ``direct`` is None: most of them absolute)."""
    records = read_records(text)
    lines = _physical_lines(text)
    if direct is None:
        direct = _looks_direct(records)
    items: list[MapItem] = []
    problems: list[Problem] = []
    for line, raw, group in _groups(lines, records):
        items.append(_map_item(line, raw, group, direct, problems))
        problems += _record_problems(_reported(group), lines, "location")
    problems += _crlf_continuations(lines)
    problems += _unicode_blanks(items)
    return tuple(items), _sorted(problems), direct


def read_master_items(text: str) -> tuple[tuple[MasterItem, ...], tuple[Problem, ...]]:
    """Items and problems of a master map."""
    records = read_records(text)
    lines = _physical_lines(text)
    items: list[MasterItem] = []
    problems: list[Problem] = []
    for line, raw, group in _groups(lines, records):
        items.append(_master_item(line, raw, group, problems))
        problems += _record_problems(_reported(group), lines, "map")
    problems += _duplicate_mount_points(items)
    problems += _crlf_continuations(lines)
    problems += _unicode_blanks(items)
    return tuple(items), _sorted(problems)


def _physical_lines(text: str) -> list[str]:
    parts = text.split("\n")
    return [part + "\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _groups(lines: list[str], records: list[Record]) -> list[tuple[int, str, list[Record]]]:
    """Consecutive physical lines as items: a record's lines stay together, and records
    that share a line share an item. Lines outside every record are blank."""
    spans: list[tuple[int, int, list[Record]]] = []
    last = len(lines)
    for record in records:
        first, end = min(record.first_line, last), min(record.last_line, last)
        if spans and first <= spans[-1][1]:
            start, stop, group = spans[-1]
            spans[-1] = (start, max(stop, end), [*group, record])
        else:
            spans.append((first, end, [record]))
    out: list[tuple[int, str, list[Record]]] = []
    at = 1
    for start, stop, group in spans:
        out += [(n, lines[n - 1], []) for n in range(at, start)]
        out.append((start, "".join(lines[start - 1 : stop]), group))
        at = stop + 1
    out += [(n, lines[n - 1], []) for n in range(at, last + 1)]
    return out


def _looks_direct(records: list[Record]) -> bool:
    keys = [dequote(r.key) for r in records if r.kind is Kind.ENTRY and r.key not in ("*", "")]
    return sum(key.startswith("/") for key in keys) * 2 > len(keys)


def _live(group: list[Record]) -> list[Record]:
    return [r for r in group if r.kind in (Kind.ENTRY, Kind.INCLUDE)]


def _reported(group: list[Record]) -> list[Record]:
    """The records whose own problems are reported: after an include on a line, the text
    that follows it gets one message from ``_include`` instead."""
    live = _live(group)
    return live[:1] if live and live[0].kind is Kind.INCLUDE else group


def _plain_item(
    line: int, raw: str, group: list[Record], value_noun: str
) -> Blank | Comment | BadEntry:
    if not group:
        return Blank(line, raw)
    if all(r.kind is Kind.COMMENT for r in group):
        return Comment(line, raw)
    dropped = next(r for r in group if r.kind is Kind.DROPPED)
    key = dequote(dropped.key) or None
    return BadEntry(key, line, raw, _drop_message(dropped, value_noun))


def _include(line: int, raw: str, group: list[Record], problems: list[Problem]) -> Include:
    first = _live(group)[0]
    others = [r for r in group if r is not first and r.kind is not Kind.COMMENT]
    name = dequote(first.key[1:])
    if not name:
        problems.append(Problem(line, 'include "+" names no map'))
    for other in others:
        text = " ".join(part for part in (other.key, other.value) if part)
        problems.append(
            Problem(
                other.first_line,
                f'text after the included map "{name}" is read as a separate entry ("{text}")',
            )
        )
    return Include(name, line, raw)


def _map_item(
    line: int, raw: str, group: list[Record], direct: bool, problems: list[Problem]
) -> MapItem:
    live = _live(group)
    if not live:
        return _plain_item(line, raw, group, "location")
    if live[0].kind is Kind.INCLUDE:
        return _include(line, raw, group, problems)
    record = live[0]
    key = dequote(record.key)
    refusal = _key_refusal(key, direct)
    if refusal:
        problems.append(Problem(record.first_line, refusal))
        return BadEntry(key, line, raw, refusal)
    value = parse_sun_value(key, record.value)
    problems += [Problem(record.first_line, message) for message in value.problems]
    return MapEntry(key, value.options, value.locations, line, raw, value.multi_mount)


def _key_refusal(key: str, direct: bool) -> str | None:
    if any(ord(ch) < 32 for ch in key):
        return f"key {key!r} holds a control character; autofs ignores the entry"
    if direct and not key.startswith("/"):
        return f'key "{key}" of a direct map is not an absolute path; autofs ignores the entry'
    if not direct and "/" in key:
        return (
            f'key "{key}" holds "/", but an indirect map key is one path component; '
            "autofs ignores the entry"
        )
    return None


def _master_item(line: int, raw: str, group: list[Record], problems: list[Problem]) -> MasterItem:
    live = _live(group)
    if not live:
        return _plain_item(line, raw, group, "map")
    if live[0].kind is Kind.INCLUDE:
        return _include(line, raw, group, problems)
    record = live[0]
    mount_point = dequote(record.key)
    if not record.key.startswith("/") or '"' in record.key:
        message = f'syntax error: mount point "{mount_point}" is not an absolute path'
        problems.append(Problem(record.first_line, message))
        return BadEntry(mount_point, line, raw, message)
    value = parse_master_value(record.value)
    if value.syntax_error:
        message = f'syntax error in the line for "{mount_point}": {value.syntax_error}'
        problems.append(Problem(record.first_line, message))
        return BadEntry(mount_point, line, raw, message)
    problems += [Problem(record.first_line, f'"{mount_point}": {m}') for m in value.problems]
    return MasterEntry(
        mount_point,
        value.map_name,
        value.map_type,
        value.options,
        line,
        raw,
        value.map_format,
    )


def _duplicate_mount_points(items: list[MasterItem]) -> list[Problem]:
    problems: list[Problem] = []
    first: dict[str, int] = {}
    nulled: dict[str, int] = {}
    for item in items:
        if not isinstance(item, MasterEntry) or item.mount_point == "/-":
            continue
        path = item.mount_point.rstrip("/") or "/"
        if item.map_type == "null":
            nulled[path] = nulled.get(path, 0) + 1
        elif nulled.get(path):
            nulled[path] -= 1  # "-null" before it asks autofs to skip this one
        elif path in first:
            problems.append(
                Problem(
                    item.line,
                    f'mount point "{path}" is already served by line {first[path]}; '
                    "autofs ignores this line",
                )
            )
        else:
            first[path] = item.line
    return problems


# -- messages ----------------------------------------------------------------------------


def _record_problems(group: list[Record], lines: list[str], value_noun: str) -> list[Problem]:
    problems: list[Problem] = []
    for record in group:
        for why, line in record.why:
            message = _why_message(record, why, line, lines, value_noun)
            if message:
                at = line if why in _AT_WHY_LINE else record.first_line
                problems.append(Problem(min(at, max(len(lines), 1)), message))
        if record.kind is Kind.DROPPED and not record.why:
            problems.append(Problem(record.first_line, _drop_message(record, value_noun)))
    return problems


_AT_WHY_LINE = frozenset({Why.RUN_ON_KEY, Why.SWALLOWED, Why.COMMENT_CONTINUED})


def _why_message(
    record: Record, why: Why, line: int, lines: list[str], value_noun: str
) -> str | None:
    key = dequote(record.key)
    lost = lines[line - 1].strip() if 0 < line <= len(lines) else ""
    if why is Why.SWALLOWED and lost:
        return (
            f"line {line} starts with a blank right after a comment, so autofs reads it "
            "as part of the comment and ignores it"
        )
    if why is Why.COMMENT_CONTINUED and lost and not lost.startswith("#"):
        return (
            f'the comment before line {line} ends with "\\", so autofs reads line {line} '
            "as part of the comment and ignores it"
        )
    if why is Why.RUN_ON_KEY:
        joined = f' and reads the key "{key}"' if record.kind is Kind.ENTRY else ""
        return (
            f"line {line} holds a key with no {value_noun} followed by blanks, so autofs 5.1.8 "
            f"runs it on into line {line + 1}{joined}"
        )
    if record.kind is Kind.DROPPED:
        return _drop_message(record, value_noun, why)
    return None


def _drop_message(record: Record, value_noun: str, why: Why | None = None) -> str:
    key = dequote(record.key)
    if why is None:
        why = next((w for w, _ in record.why if w not in _AT_WHY_LINE), None)
    indented = next((line for w, line in record.why if w is Why.INDENTED_LINE), 0)
    messages = {
        Why.NO_VALUE: f'"{key}" has no {value_noun}; autofs ignores the line',
        Why.UNMATCHED_QUOTE: f'unmatched " in the entry for "{key}"; autofs ignores it',
        Why.KEY_TOO_LONG: f'key "{key[:40]}..." is longer than {KEY_MAX_BYTES} bytes; '
        "autofs ignores the entry",
        Why.VALUE_TOO_LONG: f'entry "{key}" is longer than {ENTRY_MAX_BYTES} bytes; '
        "autofs ignores it",
        Why.INDENTED_LINE: f'bad map entry "{key}": line {indented} starts with a blank, so '
        "autofs reads it as part of this entry and ignores the entry "
        '(end the line before it with "\\" to continue the entry)',
        Why.BAD_WILDCARD: 'a key that starts with "*" must be "*" alone; autofs ignores the line',
        Why.ESCAPED_START: "the line starts with an escaped character; autofs ignores it",
        Why.ESCAPED_BLANK: f'the entry for "{key}" starts with an escaped blank; autofs ignores it',
        Why.LOST_AT_END: _lost_at_end(record),
    }
    fallback = f'autofs ignores "{key}"' if key else "autofs ignores this line"
    return messages.get(why, fallback) if why else fallback


def _lost_at_end(record: Record) -> str:
    if record.key.startswith("+"):
        return (
            f'include "{dequote(record.key)}" ends the file without a line end; autofs ignores it'
        )
    return (
        f'entry "{dequote(record.key)}" ends the file with a "\\" or a line of blanks but no '
        "line end; autofs drops it"
    )


def _crlf_continuations(lines: list[str]) -> list[Problem]:
    problems = []
    for number, line in enumerate(lines, start=1):
        body = line.removesuffix("\r\n")
        if body != line and body.endswith("\\") and (len(body) - len(body.rstrip("\\"))) % 2:
            problems.append(
                Problem(
                    number,
                    'line ends with "\\" before CR LF, which autofs does not read as a '
                    "continuation (save the file with LF line ends)",
                )
            )
    return problems


def _unicode_blanks(items: Sequence[MapItem | MasterItem]) -> list[Problem]:
    """A no-break space pasted from a web page looks like a blank but is not one to autofs:
    the seed article's ``/misc\u00a0\u00a0 /etc/auto.misc`` mounts on "/misc\u00a0\u00a0"."""
    problems = []
    for item in items:
        if isinstance(item, Comment):
            continue
        for offset, line in enumerate(item.raw.split("\n")):
            odd = sorted({ch for ch in line if ch.isspace() and ch not in " \t\n\v\f\r"})
            if odd:
                names = ", ".join(
                    f"{unicodedata.name(ch, 'a blank')} (U+{ord(ch):04X})" for ch in odd
                )
                problems.append(
                    Problem(
                        item.line + offset,
                        f"line holds {names}, which autofs reads as part of a name, not as a blank",
                    )
                )
    return problems


def _sorted(problems: list[Problem]) -> tuple[Problem, ...]:
    unique = list(dict.fromkeys(problems))
    return tuple(sorted(unique, key=lambda problem: problem.line))
