"""Deadlines and paced waits: how long each pause is, and that none goes past the deadline.

The pauses are recorded instead of slept (``asyncio.sleep`` is replaced), so these tests
take no time; the deadlines are real.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from nfs_failover.pacing import Deadline, Pacer

T = TypeVar("T")


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    pauses: list[float] = []

    async def record(seconds: float) -> None:
        pauses.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", record)
    return pauses


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def test_a_deadline_never_has_less_than_nothing_left() -> None:
    deadline = Deadline(-1.0)
    assert deadline.left() == 0.0
    assert deadline.passed()
    assert not Deadline(60.0).passed()


def test_a_share_of_a_deadline_is_that_part_of_what_is_left() -> None:
    share = Deadline(60.0).share(0.5)
    assert 29.0 < share.timeout <= 30.0
    assert 29.0 < share.left() <= 30.0


def test_pauses_grow_by_the_factor_up_to_the_cap(slept: list[float]) -> None:
    pacer = Pacer(Deadline(60.0), first=0.1, factor=2.0, cap=0.5, jitter=0.0)
    for _ in range(5):
        assert run(pacer.pause())
    assert slept == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])
    assert pacer.attempts == 6


def test_jitter_varies_each_pause_within_its_fraction(slept: list[float]) -> None:
    pacer = Pacer(Deadline(60.0), first=1.0, factor=1.0, cap=1.0)
    for _ in range(50):
        run(pacer.pause())
    assert all(0.8 <= pause <= 1.2 for pause in slept)
    assert len(set(slept)) > 1


def test_a_pause_is_cut_at_the_deadline(slept: list[float]) -> None:
    assert run(Pacer.every(10.0, Deadline(2.0)).pause())
    assert 1.0 < slept[0] <= 2.0


def test_no_pause_once_the_deadline_has_passed(slept: list[float]) -> None:
    pacer = Pacer(Deadline(0.0))
    assert not run(pacer.pause())
    assert not run(pacer.pause_whole())
    assert slept == []
    assert pacer.attempts == 1


def test_a_whole_pause_is_refused_when_the_deadline_would_come_first(
    slept: list[float],
) -> None:
    pacer = Pacer.every(5.0, Deadline(5.0))
    assert not run(pacer.pause_whole())
    assert (slept, pacer.attempts) == ([], 1)
    roomy = Pacer.every(1.0, Deadline(5.0))
    assert run(roomy.pause_whole())
    assert (slept, roomy.attempts) == ([1.0], 2)


def test_a_wait_a_server_asked_for_is_not_a_paced_pause(slept: list[float]) -> None:
    pacer = Pacer(Deadline(60.0), first=0.1, jitter=0.0)
    assert pacer.fits(3.0)
    assert not pacer.fits(60.0)
    run(pacer.sleep(3.0))
    run(pacer.pause())
    assert slept == pytest.approx([3.0, 0.1])
    assert pacer.attempts == 2


def test_a_pause_ends_when_it_is_woken() -> None:
    async def woken() -> bool:
        wake = asyncio.Event()
        wake.set()
        return await asyncio.wait_for(Pacer.every(30.0, Deadline(60.0)).pause(wake), 5.0)

    assert run(woken())
