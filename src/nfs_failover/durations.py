"""Durations as people write them in config files and on the command line: ``10s``, ``1m30s``.

Owns the one grammar for durations and its canonical spelling, so that ``format_duration``
prints what ``parse_duration`` reads back exactly (to the microsecond).
"""

from __future__ import annotations

import json
import math
import re
from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

__all__ = ["DURATION_HINT", "format_duration", "parse_duration"]

DURATION_HINT = "expected a duration such as 10s, 5m or 1h"

_MICROSECONDS = {
    "d": 86_400_000_000,
    "h": 3_600_000_000,
    "m": 60_000_000,
    "s": 1_000_000,
    "ms": 1_000,
}
_UNIT_ORDER = ("d", "h", "m", "s", "ms")
_NUMBER = r"\d+(?:\.\d+)?"
# "ms" before "m": alternation takes the first unit that matches.
_PART = re.compile(rf"({_NUMBER})(ms|d|h|m|s)")
_WHOLE = re.compile(rf"(?:{_NUMBER}(?:ms|d|h|m|s))+")
_PLAIN_NUMBER = re.compile(_NUMBER)
_MAX_TEXT = 64


def parse_duration(value: str | int | float) -> timedelta:
    """Read a non-negative duration.

    Accepted: a number of seconds (``90``, ``0.5``, ``"90"``) or one or more
    number-and-unit parts from the largest unit to the smallest, each unit at most once:
    ``500ms``, ``10s``, ``5m``, ``1h``, ``1d``, ``1m30s``, ``1.5h``. Units: ``d h m s ms``.
    The result is rounded to the microsecond.

    Raises ``ValueError`` with a one-line message (quoting the value JSON-style) for
    anything else: negatives, empty text, unknown units (``10x``), booleans, NaN, infinity.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{DURATION_HINT}, got {_quote(value)}")
    if isinstance(value, int | float):
        return _from_number(value)
    return _from_text(value)


def format_duration(duration: timedelta) -> str:
    """Spell a non-negative duration canonically: ``1d2h3m4s500ms``, ``1m30s``, ``0s``.

    Parts run from days down to milliseconds and zero parts are left out; a remainder
    below a millisecond is written as a decimal fraction of milliseconds (``1.5ms``).
    ``parse_duration(format_duration(d)) == d`` for every non-negative ``d``.
    Raises ``ValueError`` for a negative duration.
    """
    total = duration // timedelta(microseconds=1)
    if total < 0:
        raise ValueError(f"a duration must not be negative, got {duration!r}")
    if total == 0:
        return "0s"
    parts: list[str] = []
    for unit in _UNIT_ORDER[:-1]:
        count, total = divmod(total, _MICROSECONDS[unit])
        if count:
            parts.append(f"{count}{unit}")
    if total:
        milliseconds, micro = divmod(total, 1_000)
        fraction = f".{micro:03d}".rstrip("0") if micro else ""
        parts.append(f"{milliseconds}{fraction}ms")
    return "".join(parts)


def _from_number(seconds: int | float) -> timedelta:
    if isinstance(seconds, float) and not math.isfinite(seconds):
        raise ValueError(f"{DURATION_HINT}, got {_quote(seconds)}")
    if seconds < 0:
        raise ValueError(f"a duration must not be negative, got {_quote(seconds)}")
    # repr() of a float is its shortest exact spelling: 0.1 becomes 100ms, not 99.999...
    return _to_timedelta(Decimal(repr(seconds)) * _MICROSECONDS["s"], seconds)


def _from_text(text: str) -> timedelta:
    if len(text) > _MAX_TEXT:
        raise ValueError(f"{DURATION_HINT}, got {_quote(text)}")
    if text.startswith("-") and (_PLAIN_NUMBER.fullmatch(text[1:]) or _WHOLE.fullmatch(text[1:])):
        raise ValueError(f"a duration must not be negative, got {_quote(text)}")
    if _PLAIN_NUMBER.fullmatch(text):
        return _to_timedelta(Decimal(text) * _MICROSECONDS["s"], text)
    if not _WHOLE.fullmatch(text):
        raise ValueError(f"{DURATION_HINT}, got {_quote(text)}")
    total = Decimal(0)
    last_rank = -1
    for match in _PART.finditer(text):
        rank = _UNIT_ORDER.index(match.group(2))
        if rank <= last_rank:
            raise ValueError(
                f"{DURATION_HINT} (units from largest to smallest, such as 1m30s),"
                f" got {_quote(text)}"
            )
        last_rank = rank
        total += Decimal(match.group(1)) * _MICROSECONDS[match.group(2)]
    return _to_timedelta(total, text)


def _to_timedelta(microseconds: Decimal, original: object) -> timedelta:
    try:
        whole = int(microseconds.to_integral_value(rounding=ROUND_HALF_EVEN))
        return timedelta(microseconds=whole)
    except (OverflowError, InvalidOperation):
        raise ValueError(f"duration too long, got {_quote(original)}") from None


def _quote(value: object) -> str:
    if isinstance(value, str) and len(value) > _MAX_TEXT:
        value = value[:_MAX_TEXT] + "..."
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return json.dumps(str(value))
