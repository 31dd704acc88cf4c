"""Calling the synchronous Azure SDK from asyncio, bounded by a deadline.

Owns the plumbing around ``azure-mgmt-netapp`` that the ANF provider needs: each call runs
in a daemon thread of its own (an abandoned call never holds up process exit, which
``asyncio.to_thread`` would at ``asyncio.run`` shutdown) with its connection and read
timeouts cut to the time left; throttling is retried here, within the deadline and never
after it; long-running operations are watched through the poller's ``done()`` and
``status()``; SDK errors become ``ProviderError`` carrying ANF's own code and words.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypedDict, TypeVar

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    DecodeError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.polling import LROPoller
from azure.mgmt.core.polling.arm_polling import ARMPolling

from nfs_failover.errors import ProviderError, ProviderTimeout
from nfs_failover.pacing import Deadline, Pacer
from nfs_failover.replication.base import Progress

_log = logging.getLogger("nfs_failover.replication.anf")

T = TypeVar("T")

# Statuses that mean "throttled or busy, the request was not carried out: ask again later".
_RETRY_STATUSES = frozenset({429, 503})
# Server errors after which a read (never a POST) is simply asked again, within the deadline.
_TRANSIENT_STATUSES = frozenset({500, 502, 503, 504})
_READ_TRIES = 5  # of a read after server errors or dropped connections
_DEFAULT_RETRY_AFTER = 1.0  # seconds, for a 429 that does not say how long to wait
_MIN_RETRY_AFTER = 0.01  # a "Retry-After: 0" loop must not spin
_WATCH_TICK = 0.05  # how often a running operation's status is looked at for progress
_MAX_DETAIL = 300


class CallOptions(TypedDict):
    """Per-request options for the azure-core pipeline.

    ``retry_total=0`` turns azure-core's own retries off for the requests we send: its
    RetryPolicy honours Retry-After without regard to our deadline, so it could send a
    break after we had reported a timeout. ``call`` retries throttling itself.
    """

    connection_timeout: float
    read_timeout: float
    retry_total: int


def call_options(deadline: Deadline) -> CallOptions:
    """A request's options: its timeouts cut to what is left of the deadline."""
    left = max(deadline.left(), 0.001)
    return CallOptions(connection_timeout=left, read_timeout=left, retry_total=0)


def lro_polling(deadline: Deadline, interval: float, endpoint: str) -> ARMPolling:
    """The LRO polling method: ARM's, with request timeouts cut to the time left.

    Status polls keep azure-core's default retries (they are reads, harmless if one
    lands after the deadline); the poller thread is a daemon and is abandoned there.
    """
    left = max(deadline.left(), 0.001)
    return ARMPolling(
        interval,
        path_format_arguments={"endpoint": endpoint},
        connection_timeout=left,
        read_timeout=left,
    )


async def call(
    what: str, deadline: Deadline, request: Callable[[CallOptions], T], *, read: bool = False
) -> T:
    """Run one SDK request (``request(options)``) in a thread; retry throttling in time,
    and, for a ``read`` (idempotent), server errors and dropped connections too.

    Raises ``ProviderTimeout`` when the deadline passes (also when a Retry-After would
    take past it: the request is then not sent again) and ``ProviderError`` for every
    other failure.
    """
    pacer = Pacer(deadline, first=0.1)
    while True:
        if deadline.passed():
            raise ProviderTimeout(f"{what}: no answer from ANF within {deadline.timeout:g}s")
        try:
            return await _in_thread(
                what, deadline, functools.partial(request, call_options(deadline))
            )
        except HttpResponseError as exc:
            delay = _retry_after(exc)
            if delay is None:
                if (
                    read
                    and _transient(exc)
                    and pacer.attempts < _READ_TRIES
                    and await pacer.pause()
                ):
                    _log.info("%s: HTTP %s, asking again", what, exc.status_code)
                    continue
                raise provider_error(what, exc, deadline) from exc
            if not pacer.fits(delay):
                raise ProviderTimeout(
                    f"{what}: ANF is throttling (HTTP {exc.status_code}) and asks to retry"
                    f" after {delay:g}s, past the {deadline.timeout:g}s deadline; not retried",
                    code=_code(exc),
                    provider_message=_message(exc),
                ) from exc
            _log.info("%s: HTTP %s, retrying in %gs", what, exc.status_code, delay)
            await pacer.sleep(delay)
        except (ServiceRequestError, ServiceResponseError) as exc:
            if read and pacer.attempts < _READ_TRIES and await pacer.pause():
                _log.info("%s: %s, asking again", what, _detail(exc))
                continue
            detail = _detail(exc)
            tries = f" ({pacer.attempts} tries)" if pacer.attempts > 1 else ""
            raise ProviderError(
                f"{what}: cannot reach Azure Resource Manager{tries}: {detail}",
                code="connection",
                provider_message=detail,
            ) from exc
        except AzureError as exc:
            raise provider_error(what, exc, deadline) from exc


def _transient(exc: HttpResponseError) -> bool:
    return exc.status_code in _TRANSIENT_STATUSES and not isinstance(exc, DecodeError)


async def watch_operation(
    what: str, poller: LROPoller[Any], deadline: Deadline, progress: Progress | None
) -> None:
    """Wait for a long-running operation to end, reporting each status it passes through.

    Raises ``ProviderTimeout`` at the deadline (ANF may still finish the operation) and
    ``ProviderError`` with the service's code and message when it ends Failed.
    """
    loop = asyncio.get_running_loop()
    finished = asyncio.Event()
    poller.add_done_callback(lambda _method: _wake(loop, finished))
    reported: list[str] = []
    pacer = Pacer.every(_WATCH_TICK, deadline)
    while not poller.done():
        _report(what, poller.status(), reported, progress)
        if not await pacer.pause(wake=finished):
            last = reported[-1] if reported else "none"
            raise ProviderTimeout(
                f"{what}: not finished within {deadline.timeout:g}s (last status {last});"
                " ANF may still complete it, so read the status before acting again"
            )
    final = poller.status()
    _report(what, final, reported, progress)
    try:
        poller.result(timeout=0)
    except HttpResponseError as exc:
        if final.lower() not in {"failed", "canceled", "cancelled"}:
            raise provider_error(what, exc, deadline) from exc
        # The failure came in the body of an operation status poll (itself HTTP 200).
        code, message = _code(exc), _message(exc)
        said = f"{code}: {message}" if code else message
        raise ProviderError(
            f"{what}: ANF reports the operation {final}: {said}",
            code=code,
            provider_message=message,
        ) from exc
    except AzureError as exc:
        raise provider_error(what, exc, deadline) from exc


def provider_error(what: str, exc: AzureError, deadline: Deadline) -> ProviderError:
    """The ``ProviderError`` for an SDK error, in ANF's words where it gave any.

    Only the service's code and message and the exception's first line are quoted:
    neither carries the bearer token (azure-core redacts it from its own logs too).
    """
    if isinstance(exc, DecodeError):
        detail = _detail(exc)
        return ProviderError(
            f"{what}: ANF answered HTTP {exc.status_code} with a body that is not valid JSON:"
            f" {detail}",
            code="malformed",
            provider_message=detail,
        )
    if isinstance(exc, ClientAuthenticationError) and exc.status_code is None:
        cause = _auth_cause(exc)
        return ProviderError(
            f"{what}: no Azure token: {cause}", code="credentials", provider_message=cause
        )
    if isinstance(exc, HttpResponseError) and exc.status_code is not None:
        code, message = _code(exc), _message(exc)
        said = f"{code}: {message}" if code else message
        return ProviderError(
            f"{what}: ANF answered HTTP {exc.status_code}: {said}",
            code=code,
            provider_message=message,
        )
    if deadline.passed():
        return ProviderTimeout(f"{what}: no answer from ANF within {deadline.timeout:g}s")
    detail = _detail(exc)
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return ProviderError(
            f"{what}: cannot reach Azure Resource Manager: {detail}",
            code="connection",
            provider_message=detail,
        )
    code = _code(exc) if isinstance(exc, HttpResponseError) else None
    return ProviderError(f"{what}: {detail}", code=code, provider_message=detail)


def _code(exc: HttpResponseError) -> str | None:
    if exc.error is not None and exc.error.code:
        return exc.error.code
    return None


def _message(exc: HttpResponseError) -> str:
    if exc.error is not None and exc.error.message:
        return exc.error.message
    return exc.reason or _detail(exc)


def _auth_cause(exc: ClientAuthenticationError) -> str:
    """Why no token came: azure-identity's first line only says that none did, and the
    cause (``AADSTS7000215: Invalid client secret ...``, an unreachable endpoint) is on a
    later line. Its messages carry no secret."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    named = [line for line in lines if "AADSTS" in line]
    cause = named[0] if named else lines[-1] if len(lines) > 1 else lines[0]
    if cause != lines[0] and len(lines) > 1:
        cause = f"{lines[0]} {cause}"
    return cause if len(cause) <= _MAX_DETAIL else cause[:_MAX_DETAIL] + "..."


def _detail(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    text = text or type(exc).__name__
    return text if len(text) <= _MAX_DETAIL else text[:_MAX_DETAIL] + "..."


def _retry_after(exc: HttpResponseError) -> float | None:
    """Seconds to wait before asking again, or None when the error is final."""
    if exc.status_code not in _RETRY_STATUSES or exc.response is None:
        return None
    # azure-core types the response as a protocol without headers; every transport has them.
    headers = getattr(exc.response, "headers", None)
    header: object = headers.get("Retry-After") if headers is not None else None
    if not isinstance(header, str):
        return _DEFAULT_RETRY_AFTER if exc.status_code == 429 else None
    return max(_parse_retry_after(header), _MIN_RETRY_AFTER)


def _parse_retry_after(value: str) -> float:
    """Retry-After is delay-seconds or an HTTP date (RFC 9110, 10.2.3)."""
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return _DEFAULT_RETRY_AFTER
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _report(what: str, status: str, reported: list[str], progress: Progress | None) -> None:
    if reported and reported[-1] == status:
        return
    reported.append(status)
    _log.info("%s: %s", what, status)
    if progress is not None:
        progress(f"{what}: {status}", None)


async def fetch_token(credential: TokenCredential, scope: str, deadline: Deadline) -> None:
    """Get a token before a request, so that a token endpoint that does not answer is
    named as such (not "no answer from ANF"); the credential caches it for the request."""
    what = "getting a token from Microsoft Entra ID"
    try:
        await _in_thread(
            what, deadline, lambda: credential.get_token(scope), who="the identity endpoint"
        )
    except ClientAuthenticationError as exc:
        cause = _auth_cause(exc)
        raise ProviderError(
            f"no Azure token: {cause}", code="credentials", provider_message=cause
        ) from None


async def _in_thread(
    what: str, deadline: Deadline, work: Callable[[], T], *, who: str = "ANF"
) -> T:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def run() -> None:
        try:
            result = work()
        except Exception as exc:  # handed to the task awaiting it
            _hand_over(loop, functools.partial(_set_exception, future, exc))
        else:
            _hand_over(loop, functools.partial(_set_result, future, result))

    threading.Thread(target=run, name=f"anf: {what}", daemon=True).start()
    try:
        return await asyncio.wait_for(future, deadline.left())
    except TimeoutError:
        raise ProviderTimeout(
            f"{what}: no answer from {who} within {deadline.timeout:g}s"
        ) from None


def _hand_over(loop: asyncio.AbstractEventLoop, settle: Callable[[], None]) -> None:
    with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
        loop.call_soon_threadsafe(settle)


def _set_result(future: asyncio.Future[T], result: T) -> None:
    if not future.done():
        future.set_result(result)


def _set_exception(future: asyncio.Future[T], exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)


def _wake(loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(event.set)
