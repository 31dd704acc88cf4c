"""Deadlines and paced waits: the one way this project waits between attempts.

A ``Deadline`` is the point in monotonic time that every request and wait of one operation
ends by. It never changes once made, so the worker threads that run a synchronous SDK's
calls read it as safely as the event loop does. A ``Pacer`` spaces attempts under a
deadline: a retry waits a pause that grows (with jitter, so that many callers do not retry
in step) up to a cap; a poll (``Pacer.every``) waits the same interval each time; neither
ever waits past the deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time


class Deadline:
    """``timeout`` seconds from when it is made; ``left()`` is never below zero."""

    __slots__ = ("_end", "_start", "timeout")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._start = time.monotonic()
        self._end = self._start + max(timeout, 0.0)

    def left(self) -> float:
        return max(self._end - time.monotonic(), 0.0)

    def passed(self) -> bool:
        return time.monotonic() >= self._end

    def elapsed(self) -> float:
        """Seconds since the deadline was set."""
        return time.monotonic() - self._start

    def share(self, part: float) -> Deadline:
        """A deadline ``part`` of the way from now to this one: what one step may use, so
        that the rest is kept for the steps after it."""
        return Deadline(self.left() * part)


class Pacer:
    """``while True: try...; if not await pacer.pause(): give up``.

    The first pause is ``first`` seconds, each next one ``factor`` times longer up to
    ``cap``, each varied by up to ``jitter`` (a fraction) either way. ``attempts`` counts
    the attempts the pauses have let through, the first included.
    """

    def __init__(
        self,
        deadline: Deadline,
        *,
        first: float = 0.2,
        factor: float = 2.0,
        cap: float = 2.0,
        jitter: float = 0.2,
    ) -> None:
        self.deadline = deadline
        self.delay = first
        self.factor = factor
        self.cap = cap
        self.jitter = jitter
        self.attempts = 1

    @classmethod
    def every(cls, interval: float, deadline: Deadline) -> Pacer:
        """A poll: the same pause every time, without jitter."""
        return cls(deadline, first=interval, factor=1.0, cap=interval, jitter=0.0)

    def left(self) -> float:
        return self.deadline.left()

    def fits(self, seconds: float) -> bool:
        """Whether a wait of ``seconds`` ends before the deadline."""
        return seconds < self.deadline.left()

    async def pause(self, wake: asyncio.Event | None = None) -> bool:
        """Wait before the next attempt, never past the deadline (nor past ``wake`` being
        set); False, at once, when the deadline has passed."""
        left = self.deadline.left()
        if left <= 0:
            return False
        await _wait(min(self._drawn(), left), wake)
        self._grow()
        return True

    async def pause_whole(self) -> bool:
        """Wait a whole pause before the next attempt; False, at once, when the deadline
        would come first: for a caller that gives up rather than try at the last moment."""
        pause = self._drawn()
        if not self.fits(pause):
            return False
        await asyncio.sleep(pause)
        self._grow()
        return True

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (what a server asked for), never past the deadline. It is not
        a paced pause: neither the next pause nor ``attempts`` changes."""
        await asyncio.sleep(min(seconds, self.deadline.left()))

    def _drawn(self) -> float:
        if not self.jitter:
            return self.delay
        return self.delay * random.uniform(1 - self.jitter, 1 + self.jitter)  # noqa: S311

    def _grow(self) -> None:
        self.delay = min(self.delay * self.factor, self.cap)
        self.attempts += 1


async def _wait(seconds: float, wake: asyncio.Event | None) -> None:
    if wake is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wake.wait(), seconds)
