"""Paced retries under a deadline: the one way this project waits between attempts.

An attempt that failed is tried again after a pause that grows (with jitter, so that many
callers do not retry in step) up to a cap, and never past the caller's deadline.
"""

from __future__ import annotations

import asyncio
import random
import time


class Pacer:
    """``while True: try...; if not await pacer.pause(): give up``."""

    def __init__(
        self, timeout: float, *, first: float = 0.2, factor: float = 2.0, cap: float = 2.0
    ) -> None:
        self.deadline = time.monotonic() + timeout
        self.delay = first
        self.factor = factor
        self.cap = cap
        self.attempts = 1

    def left(self) -> float:
        return max(self.deadline - time.monotonic(), 0.0)

    async def pause(self) -> bool:
        """Wait before the next attempt; False (at once) when the deadline has passed."""
        left = self.left()
        if left <= 0:
            return False
        await asyncio.sleep(min(self.delay * random.uniform(0.8, 1.2), left))  # noqa: S311
        self.delay = min(self.delay * self.factor, self.cap)
        self.attempts += 1
        return True
