"""Problem lines: how values and field paths read in them, and pydantic's errors turned into them.

Every problem with a config file is one line, ``FILE: FIELD.PATH: message``, quoting the
value JSON-style. Pydantic's own messages are not shown: they name its internals (error
types, documentation URLs, union tags and wrapper fields in the location) and may span
lines, so ``validation_problems`` rewrites each error from its type and context. Checks
that find several problems at once raise ``Problems``, which carries their locations
through pydantic to here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from nfs_failover.durations import format_duration

__all__ = [
    "Loc",
    "Position",
    "Problem",
    "Problems",
    "char_name",
    "describe",
    "format_loc",
    "line",
    "one_line",
    "report",
    "validation_problems",
]

Loc = tuple[str | int, ...]
Position = tuple[int, int]

_MAX_QUOTED = 80


# -- quoting -----------------------------------------------------------------------------


def describe(value: object) -> str:
    """A value as problem lines show it: JSON-quoted scalars, "a list" or "a mapping"."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str) and len(value) > _MAX_QUOTED:
        value = value[:_MAX_QUOTED] + "..."
    if isinstance(value, timedelta) and value >= timedelta(0):
        value = format_duration(value)
    if value is not None and not isinstance(value, str | bool | int | float):
        value = str(value)
    text = json.dumps(value, ensure_ascii=False)
    # json.dumps leaves U+2028, U+0085 and friends alone; they would break the line.
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)


def char_name(char: str) -> str:
    """A refused character as a message names it: a class of characters, or the character."""
    if char.isspace():
        return "whitespace"
    if char in "'\"`":
        return "quotes"
    if not char.isprintable():
        return "control characters"
    return describe(char)


def one_line(text: str) -> str:
    return " ".join(text.split())


def format_loc(loc: Loc) -> str:
    """``("volumes", 0, "replicas")`` -> ``volumes[0].replicas``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", part):
            out += f".{part}" if out else part
        else:
            out += f"[{describe(part)}]"
    return out


# -- several problems from one check -----------------------------------------------------


class Problems(ValueError):
    """Problems found by one cross-field check, each at a location below the checked value."""

    def __init__(self, problems: Sequence[tuple[Loc, str]]) -> None:
        super().__init__("; ".join(f"{format_loc(loc)}: {text}" for loc, text in problems))
        self.problems = list(problems)


def report(problems: Sequence[tuple[Loc, str]]) -> None:
    """Raise ``Problems`` if there are any; called from validators."""
    if problems:
        raise Problems(problems)


# -- problem lines -----------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One problem, where the file has it (for sorting) and at which field."""

    position: Position
    loc: Loc
    text: str


def line(source: str, problem: Problem) -> str:
    """The problem as the user reads it: ``FILE: FIELD.PATH: message``."""
    where = format_loc(problem.loc)
    return f"{source}: {where}: {problem.text}" if where else f"{source}: {problem.text}"


_TYPE_MESSAGES = {
    "missing": "missing",
    "extra_forbidden": "unknown field",
    "invalid_key": "unknown field",
    "string_type": "expected a string, got {got}",
    "int_type": "expected a whole number, got {got}",
    "int_parsing": "expected a whole number, got {got}",
    "int_from_float": "expected a whole number, got {got}",
    "bool_type": "expected true or false, got {got}",
    "bool_parsing": "expected true or false, got {got}",
    "list_type": "expected a list, got {got}",
    "tuple_type": "expected a list, got {got}",
    "dict_type": "expected a mapping, got {got}",
    "model_type": "expected a mapping, got {got}",
    "model_attributes_type": "expected a mapping, got {got}",
    "greater_than_equal": "must be at least {ge}, got {got}",
    "greater_than": "must be more than {gt}, got {got}",
}


def validation_problems(
    error: ValidationError, data: object, position: Callable[[Loc], Position]
) -> list[Problem]:
    """The problems in ``error``, raised validating ``data``; ``position`` places a field."""
    problems = []
    for item in error.errors(include_url=False):
        for raw_loc, text in _messages(item):
            loc = _clean_loc(raw_loc, data)
            problems.append(Problem(position(loc), loc, text))
    return problems


def _messages(item: ErrorDetails) -> list[tuple[Loc, str]]:
    """(raw pydantic location, message) pairs for one pydantic error."""
    loc: Loc = tuple(item["loc"])
    kind = item["type"]
    ctx = item.get("ctx") or {}
    got = describe(item.get("input"))
    if kind == "value_error":
        cause = ctx.get("error")
        if isinstance(cause, Problems):
            return [((*loc, *sub), text) for sub, text in cause.problems]
        return [(loc, one_line(str(cause)))]
    if kind == "union_tag_invalid":
        tags = ", ".join(f'"{tag}"' for tag in re.findall(r"'([^']*)'", ctx["expected_tags"]))
        field = str(ctx["discriminator"]).strip("'")
        value = item["input"].get(field) if isinstance(item["input"], dict) else None
        return [((*loc, field), f"expected one of {tags}, got {describe(value)}")]
    if kind == "union_tag_not_found":
        return [((*loc, str(ctx["discriminator"]).strip("'")), "missing")]
    if kind in _TYPE_MESSAGES:
        return [(loc, _TYPE_MESSAGES[kind].format(got=got, **ctx))]
    text = one_line(item["msg"])
    return [(loc, f"{text[:1].lower()}{text[1:]}, got {got}")]


def _clean_loc(loc: Loc, data: object) -> Loc:
    """Drop the segments pydantic adds that are not in the file: union tags, wrapper fields.

    Walks the input alongside the location; a name that the input does not have at that
    point is pydantic's own unless it is the last segment (a missing or unknown field).
    """
    out: list[str | int] = []
    node: object = data
    for index, part in enumerate(loc):
        if isinstance(node, dict):
            if part not in node and index < len(loc) - 1:
                continue  # a union tag such as "anf"
            node = node.get(part)
            out.append(str(part))  # a YAML key such as 1 is a name here, not an index
        elif isinstance(node, list) and isinstance(part, str):
            continue  # a field wrapping a list as written, such as a hook's argv
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            out.append(part)
        else:
            node = None
            out.append(part)
    return tuple(out)
