"""How long the controller may act on its leader lease, on this host's monotonic clock.

The store grants the lease for ``ttl`` seconds counted from when the acquire call was
sent (the ``Store`` contract), so no other controller can be granted it before then. This
controller counts from a moment just before it sent the call, and stops acting a
``margin`` earlier still: max(1 s, ttl / 5) covers the two hosts' clocks running at
slightly different rates, a store write already on its way when the time ends, and the
event loop being a little late to notice. Wall clocks play no part: a clock step on this
host neither lengthens nor shortens the lease. ``LeaseKeeper`` takes and renews it, and
tells the controller the moment it is lost, so that its workflows stop in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from nfs_failover.errors import NfsFailoverError
from nfs_failover.store import Store, StoreError

log = logging.getLogger(__name__)
MIN_MARGIN = 1.0


def lease_margin(ttl: float) -> float:
    """How long before the store's ttl ends this controller stops acting on the lease."""
    return max(MIN_MARGIN, ttl / 5)


class Lease:
    """The validity of the lease this controller holds, if any: ``granted`` with the
    monotonic time its acquire call was sent, ``lost`` when a renewal failed."""

    def __init__(self, ttl: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.margin = lease_margin(ttl)
        self._clock = clock
        self._until: float | None = None
        self._expires: float | None = None

    @property
    def usable(self) -> float:
        """The seconds of a fresh grant this controller may act on: ttl less the margin."""
        return self.ttl - self.margin

    @property
    def until(self) -> float | None:
        """The monotonic time the lease stops being valid here, or None when not held."""
        return self._until

    @property
    def expires(self) -> float | None:
        """The monotonic time the last grant ends in the store at the earliest: before it,
        no other controller can be granted the lease. Kept once the lease is lost."""
        return self._expires

    def granted(self, sent: float) -> bool:
        """The store said yes to a call sent at ``sent``; whether that still leaves time to
        act (an answer that came after the validity ended gives none)."""
        self._expires = sent + self.ttl
        self._until = sent + self.usable
        if not self.valid():
            self._until = None
        return self._until is not None

    def lost(self) -> None:
        self._until = None

    def valid(self) -> bool:
        return self._until is not None and self._clock() < self._until

    def left(self) -> float:
        """Seconds of validity left, 0 when not held."""
        return 0.0 if self._until is None else max(self._until - self._clock(), 0.0)

    def call_timeout(self, store_timeout: float) -> float:
        """The deadline of the next acquire call: never longer than the store's own, nor
        than the validity left (a renewal answered later is of no use: the lease has ended
        here by then), nor than a fresh grant's usable time when none is held."""
        limit = self.left() if self.valid() else self.usable
        return max(min(store_timeout, limit), 0.001)


class LeaseLost(NfsFailoverError):
    """This controller may no longer act: its lease ended, or was never held."""


class LeaseKeeper:
    """Takes and renews the leader lease ``name`` for ``holder``, one call at a time.

    Each call's deadline is inside the validity left (``Lease.call_timeout``); a timer
    fires when the validity ends without a renewal. When leadership is lost (a renewal
    said False, raised ``StoreError``, or came too late) ``on_lost`` is told at once, with
    the reason, and "lease lost: ..." is logged once; "leader again" once it is back.
    """

    def __init__(
        self,
        store: Store,
        name: str,
        holder: str,
        ttl: float,
        *,
        on_lost: Callable[[str], None],
        on_store_error: Callable[[StoreError], None],
    ) -> None:
        self.store = store
        self.name = name
        self.holder = holder
        self.lease = Lease(ttl)
        self.leader = False
        self.seen_holder: str | None = None  # who held it at the last look, if another
        self._on_lost = on_lost
        self._on_store_error = on_store_error
        self._renewing = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._ever = False

    def renew_every(self, interval: float) -> float:
        """How often ``keep`` renews: every interval, and at least three times within the
        usable validity, so that one slow or lost answer never ends a healthy lease."""
        return min(interval, self.lease.usable / 3)

    async def renew(self) -> str | None:
        """Take or renew the lease now: None when held, else why not (one line)."""
        async with self._renewing:
            timeout = self.lease.call_timeout(self.store.timeout)
            sent = time.monotonic()  # before the call leaves: the store counts from later
            try:
                held = await asyncio.to_thread(
                    self.store.acquire_lease,
                    self.name,
                    self.holder,
                    self.lease.ttl,
                    timeout=timeout,
                )
            except StoreError as exc:
                self._on_store_error(exc)
                why = f"store unreachable ({exc}); this controller cannot hold the lease"
                self.lost(why)
                return why
            if held and self.lease.granted(sent):
                self._held()
                return None
            if held:
                why = "the lease was granted too late to act on; try again"
                self.lost(why)
                return why
            return await self._refused()

    async def _refused(self) -> str:
        try:
            self.seen_holder = await asyncio.to_thread(self.store.lease_holder, self.name)
        except StoreError as exc:
            self._on_store_error(exc)
            self.seen_holder = None
        holder = self.seen_holder or "another controller"
        why = f"controller {holder} holds the lease; send the request to it"
        self.lost(f"{holder} holds it now" if self.leader else why)
        return why

    async def keep(self, stop: asyncio.Event, interval: float) -> None:
        """Renew every ``renew_every(interval)`` until ``stop``."""
        every = self.renew_every(interval)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
            if not stop.is_set():
                await self.renew()

    def _held(self) -> None:
        self._cancel_timer()
        self._timer = asyncio.get_running_loop().call_later(self.lease.left(), self._ended)
        self.seen_holder = None
        if not self.leader:
            self.leader = True
            if self._ever:
                log.warning("leader again: %s holds the lease", self.holder)
            else:
                log.info("%s holds the lease", self.holder)
            self._ever = True

    def _ended(self) -> None:
        """The timer: the validity ended and no renewal came in time."""
        self._timer = None
        if self.lease.valid():  # renewed meanwhile (a later timer is set)
            return
        self.lost(
            f"not renewed within {self.lease.usable:g}s (ttl {self.lease.ttl:g}s less a"
            f" margin of {self.lease.margin:g}s)"
        )

    def lost(self, why: str) -> None:
        """Leadership ends here now (if held); the workflows are told to stop."""
        self.lease.lost()
        self._cancel_timer()
        if not self.leader:
            return
        self.leader = False
        log.warning("lease lost: %s", why)
        self._on_lost(why)

    def guard(self) -> None:
        """Raise ``LeaseLost`` unless the lease is valid here now: what a workflow checks
        before each step and each write."""
        if not self.lease.valid():
            raise LeaseLost("not the leader any more: the lease may be another controller's")

    async def release(self) -> None:
        """Give the lease up, so that a standby takes over at once; a store that does not
        answer leaves it to expire."""
        self.lease.lost()
        self._cancel_timer()
        self.leader = False
        try:
            await asyncio.to_thread(self.store.release_lease, self.name, self.holder)
        except StoreError as exc:
            log.warning("lease not released (it expires on its own): %s", exc)

    def close(self) -> None:
        self._cancel_timer()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
