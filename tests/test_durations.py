"""Durations as people write them: read, refused, written canonically, and back again."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nfs_failover.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10s", timedelta(seconds=10)),
        ("5m", timedelta(minutes=5)),
        ("1h", timedelta(hours=1)),
        ("1d", timedelta(days=1)),
        ("500ms", timedelta(milliseconds=500)),
        ("1m30s", timedelta(seconds=90)),
        ("1h0m5s", timedelta(hours=1, seconds=5)),
        ("1.5h", timedelta(minutes=90)),
        ("90", timedelta(seconds=90)),
        (90, timedelta(seconds=90)),
        (0.1, timedelta(milliseconds=100)),
        ("0", timedelta(0)),
    ],
)
def test_durations_read_as_people_write_them(text: str | int | float, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "bad",
    ["", "-5s", "-1", "10x", "s", "1m 30s", "30s1m", "1s1s", "1e3", True, False, -1, float("nan")],
)
def test_durations_refuse_anything_else(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"duration"):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("duration", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=60), "1m"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(days=1, hours=2, minutes=3, seconds=4, milliseconds=500), "1d2h3m4s500ms"),
        (timedelta(microseconds=1500), "1.5ms"),
    ],
)
def test_durations_are_written_canonically(duration: timedelta, text: str) -> None:
    assert format_duration(duration) == text


def test_a_negative_duration_cannot_be_written() -> None:
    with pytest.raises(ValueError, match="negative"):
        format_duration(timedelta(seconds=-1))


@given(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=100_000)))
def test_writing_then_reading_a_duration_gives_it_back(duration: timedelta) -> None:
    assert parse_duration(format_duration(duration)) == duration


@given(st.integers(min_value=0, max_value=10**9))
def test_a_plain_number_is_seconds(seconds: int) -> None:
    assert parse_duration(seconds) == timedelta(seconds=seconds)
    assert parse_duration(str(seconds)) == timedelta(seconds=seconds)


@given(
    st.lists(st.integers(min_value=0, max_value=999), min_size=5, max_size=5).map(
        lambda n: f"{n[0]}d{n[1]}h{n[2]}m{n[3]}s{n[4]}ms"
    )
)
def test_reading_then_writing_a_duration_is_stable(text: str) -> None:
    canonical = format_duration(parse_duration(text))
    assert format_duration(parse_duration(canonical)) == canonical
