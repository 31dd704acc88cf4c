"""The ONTAP REST boundary: credentials, the HostConnection, and deadline-bounded calls.

Owns everything that touches the synchronous netapp-ontap library. Each call is a
``Request``, named by its method and path before it is sent, and runs in the caller's
worker thread with request timeouts cut from the operation's deadline and no silent
retries (the provider asks a GET again itself, paced and within the deadline). Every
library or transport failure leaves as an ``OntapError`` (or ``OntapTimeout``) carrying
ONTAP's own code and message, the request it concerns, and whether asking again could
help. Replies come back as plain JSON objects: reads use ``fast_get_collection``, which
skips the library's schema check, so a state this library version does not know reaches
the caller instead of raising.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

import requests
from netapp_ontap.error import NetAppRestError
from netapp_ontap.host_connection import HostConnection, LoggingAdapter
from netapp_ontap.resources.export_rule import ExportRule
from netapp_ontap.resources.job import Job
from netapp_ontap.resources.snapmirror_relationship import SnapmirrorRelationship
from netapp_ontap.resources.snapmirror_transfer import SnapmirrorTransfer
from netapp_ontap.resources.volume import Volume as OntapVolume
from urllib3.util.retry import Retry

from nfs_failover.config import OntapReplication
from nfs_failover.errors import ProviderError, ProviderTimeout
from nfs_failover.pacing import Deadline

USERNAME_ENV = "NFS_FAILOVER_ONTAP_USERNAME"
PASSWORD_ENV = "NFS_FAILOVER_ONTAP_PASSWORD"  # noqa: S105 - the variable's name, not a secret
CONNECT_TIMEOUT = 10.0  # seconds; never more than what is left of the deadline
RELATIONSHIP_FIELDS = ",".join(
    (
        "uuid",
        "state",
        "healthy",
        "unhealthy_reason",
        "lag_time",
        "exported_snapshot",
        "source.path",
        "destination.path",
        "transfer.state",
        "transfer.bytes_transferred",
        "transfer.end_time",
        "transfer.uuid",
    )
)
JOB_FIELDS = "uuid,state,message,code,error"
VOLUME_FIELDS = "uuid,name,svm.name,nas.export_policy.id,nas.export_policy.name"
RULE_FIELDS = "index,clients,ro_rule,rw_rule"
RELATIONSHIPS_PATH = "/api/snapmirror/relationships"
JOBS_PATH = "/api/cluster/jobs"
VOLUMES_PATH = "/api/storage/volumes"
EXPORT_POLICIES_PATH = "/api/protocols/nfs/export-policies"
MAX_REASON = 300
# Server errors a load balancer or a busy cluster gives for a moment; an idempotent
# request that met one is worth asking again.
TRANSIENT_STATUSES = frozenset({500, 502, 503, 504})

JsonObject = dict[str, object]
T = TypeVar("T")


class OntapError(ProviderError):
    """An ONTAP call that failed: ``request`` names it (``GET /api/...``), ``status`` is the
    HTTP status when ONTAP answered, ``transient`` says whether asking again could help (a
    server error in ``TRANSIENT_STATUSES``, or a connection that failed), and
    ``retry_after`` is the pause in seconds the server asked for, if it asked."""

    def __init__(
        self,
        message: str,
        *,
        request: str,
        code: str | None = None,
        provider_message: str = "",
        status: int | None = None,
        transient: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, code=code, provider_message=provider_message)
        self.request = request
        self.status = status
        self.transient = transient
        self.retry_after = retry_after


class OntapTimeout(OntapError, ProviderTimeout):
    """``request`` did not answer within the deadline (or could not be sent before it)."""

    def __init__(self, message: str, *, request: str, status: int | None = None) -> None:
        super().__init__(message, request=request, code="timeout", status=status)


@dataclass(frozen=True)
class Request(Generic[T]):
    """One ONTAP call, named before it is sent.

    ``method`` and ``path`` name it in every message about it, so that a hang says which
    call hung. Only a GET is idempotent: a PATCH or POST whose reply was lost may have
    been acted on, so only a GET is ever sent again.
    """

    method: str
    path: str
    send: Callable[[Deadline], T] = field(repr=False)  # runs it, bounded by the deadline

    @property
    def idempotent(self) -> bool:
        return self.method == "GET"

    def __str__(self) -> str:
        return f"{self.method} {self.path}"

    def unanswered(self) -> str:
        """What a request that got no answer within the deadline leaves behind."""
        text = f"did not answer {self} within the deadline"
        if self.idempotent:
            return text
        # It may have reached ONTAP, and been acted on, before the answer was lost.
        return f"{text}; ONTAP may have acted on it: read the status before acting again"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)


def read_credentials(
    settings: OntapReplication, environ: Mapping[str, str] | None = None
) -> Credentials:
    """The user name and password: from ``credentials_file`` (two lines) or the environment.

    The file must not be readable by group or others. Neither value is ever logged or put
    into an error message.
    """
    if settings.credentials_file is not None:
        return _read_credentials_file(settings.credentials_file)
    env = os.environ if environ is None else environ
    username, password = env.get(USERNAME_ENV, "").strip(), env.get(PASSWORD_ENV, "")
    if not username or not password:
        raise ProviderError(
            f"ONTAP credentials missing: set credentials_file, or {USERNAME_ENV} and"
            f" {PASSWORD_ENV}",
            code="credentials",
        )
    return Credentials(username, password)


def _read_credentials_file(path: Path) -> Credentials:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise ProviderError(
            f"cannot read ONTAP credentials file {path}: {exc.strerror}", code="credentials"
        ) from None
    with os.fdopen(fd, "rb") as file:
        mode = os.fstat(file.fileno()).st_mode
        if mode & 0o077:  # readable, or writable (anyone could put their own password)
            raise ProviderError(
                f"ONTAP credentials file {path} is accessible by group or others (mode"
                f" {stat.S_IMODE(mode):04o}); refusing it: chmod 600 {path}",
                code="credentials",
            )
        data = file.read(64 * 1024)
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        lines = []
    if len(lines) < 2 or not lines[0].strip() or not lines[1]:
        raise ProviderError(
            f"ONTAP credentials file {path} must hold the user name on its first line and the"
            " password on its second (content not shown)",
            code="credentials",
        )
    return Credentials(lines[0].strip(), lines[1])


def connect(settings: OntapReplication, credentials: Credentials) -> HostConnection:
    """A HostConnection to the cluster; ``ca_file``, when set, is the only CA trusted."""
    verify: bool | str = str(settings.ca_file) if settings.ca_file else settings.verify_tls
    return HostConnection(
        settings.cluster,
        port=settings.port,
        username=credentials.username,
        password=credentials.password,
        verify=verify,  # type: ignore[arg-type]  # requests takes a CA bundle path too
    )


class _DeadlineAdapter(LoggingAdapter):
    """The library's adapter with per-call timeouts, no silent retries, and the CA file.

    The library mounts its adapter once with fixed ``protocol_timeouts`` (6 s connect,
    45 s read) and retries failed connections and GETs 5 times, so one call on a dead
    cluster could take minutes; here every request's timeouts are what is left of the
    operation's deadline, and retries are the provider's (GETs only, paced, within the
    deadline, honouring Retry-After). requests lets ``REQUESTS_CA_BUNDLE`` or
    ``CURL_CA_BUNDLE`` replace a session's CA path, so a configured CA file is passed on
    each request instead.
    """

    def __init__(self, connection: HostConnection) -> None:
        retries = Retry(total=0, read=False, redirect=False)
        super().__init__(connection, max_retries=retries)  # type: ignore[no-untyped-call]
        self.request_timeout: tuple[float, float] = (CONNECT_TIMEOUT, CONNECT_TIMEOUT)
        verify: object = connection.verify
        self.ca_file = verify if isinstance(verify, str) else None

    def send(  # noqa: PLR0917 - requests' own adapter signature
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: object = None,
        verify: bool | str = True,
        cert: object = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        del timeout
        return super().send(
            request,
            stream=stream,
            timeout=self.request_timeout,
            verify=self.ca_file or verify,
            cert=cert,
            proxies=proxies,
        )


class OntapClient:
    """Synchronous ONTAP calls: each method returns a ``Request`` whose ``send(deadline)``
    is bounded by that ``Deadline``.

    Meant to run in a worker thread (``asyncio.to_thread``). Calls are serialised, as the
    timeouts live on the shared session's adapter.
    """

    def __init__(self, connection: HostConnection, *, owned: bool = False) -> None:
        self._connection = connection
        self._owned = owned
        self._lock = threading.Lock()
        self._adapter = _DeadlineAdapter(connection)
        connection.session.mount(connection.origin, self._adapter)

    @property
    def origin(self) -> str:
        return str(self._connection.origin)

    def relationships(self, query: Mapping[str, str]) -> Request[list[JsonObject]]:
        """The relationships matching ``query`` (``uuid``, ``destination.path``, ...)."""

        def call() -> list[JsonObject]:
            params: dict[str, Any] = {"fields": RELATIONSHIP_FIELDS, **query}
            found = SnapmirrorRelationship.fast_get_collection(
                connection=self._connection, **params
            )
            return [_object(raw.resource_data, "relationship record") for raw in found]

        path = f"{RELATIONSHIPS_PATH}?{_query_text(query)}"
        return self._request("GET", path, "reading the SnapMirror relationship", call)

    def change_relationship(
        self, uuid: str, changes: Mapping[str, object], *, force: bool
    ) -> Request[str | None]:
        """PATCH the relationship; the uuid of the job ONTAP started, if it started one."""
        # ONTAP wants the string "true"; requests would send True as "True".
        query: dict[str, Any] = {"force": "true"} if force else {}

        def call() -> str | None:
            resource = SnapmirrorRelationship(uuid=uuid)
            resource.set_connection(self._connection)
            for name, value in changes.items():
                setattr(resource, name, value)
            return _job_uuid(resource.patch(poll=False, **query).http_response)

        path = f"{RELATIONSHIPS_PATH}/{uuid}" + (f"?{_query_text(query)}" if query else "")
        return self._request("PATCH", path, "changing the SnapMirror relationship", call)

    def start_transfer(self, uuid: str) -> Request[str | None]:
        """POST an update transfer; the uuid of the job ONTAP started, if it started one."""

        def call() -> str | None:
            transfer = SnapmirrorTransfer(uuid)
            transfer.set_connection(self._connection)
            return _job_uuid(transfer.post(poll=False).http_response)

        path = f"{RELATIONSHIPS_PATH}/{uuid}/transfers"
        return self._request("POST", path, "starting a SnapMirror transfer", call)

    def job(self, uuid: str) -> Request[JsonObject | None]:
        """The job's record, or None when ONTAP no longer knows it."""

        def call() -> JsonObject | None:
            found = Job.fast_get_collection(
                connection=self._connection, fields=JOB_FIELDS, uuid=uuid
            )
            records = [_object(raw.resource_data, "job record") for raw in found]
            return records[0] if records else None

        return self._request("GET", f"{JOBS_PATH}?uuid={uuid}", f"reading ONTAP job {uuid}", call)

    def volumes(self, query: Mapping[str, str]) -> Request[list[JsonObject]]:
        """The volumes matching ``query`` (``name`` and ``svm.name``, or
        ``nas.export_policy.id``), with their export policy."""

        def call() -> list[JsonObject]:
            params: dict[str, Any] = {"fields": VOLUME_FIELDS, **query}
            found = OntapVolume.fast_get_collection(connection=self._connection, **params)
            return [_object(raw.resource_data, "volume record") for raw in found]

        path = f"{VOLUMES_PATH}?{_query_text(query)}"
        return self._request("GET", path, "reading the volume's export policy", call)

    def export_rules(self, policy: int) -> Request[list[JsonObject]]:
        """The rules of export policy ``policy`` (its id), in index order."""

        def call() -> list[JsonObject]:
            found = ExportRule.fast_get_collection(
                policy, connection=self._connection, fields=RULE_FIELDS
            )
            return [_object(raw.resource_data, "export rule record") for raw in found]

        path = f"{EXPORT_POLICIES_PATH}/{policy}/rules"
        return self._request("GET", path, f"reading the rules of export policy {policy}", call)

    def change_export_rule(
        self, policy: int, index: int, changes: Mapping[str, object]
    ) -> Request[str | None]:
        """PATCH one rule of an export policy; the job's uuid if ONTAP started one."""

        def call() -> str | None:
            rule = ExportRule(policy={"id": policy}, index=index)
            rule.set_connection(self._connection)
            for name, value in changes.items():
                setattr(rule, name, value)
            return _job_uuid(rule.patch(poll=False).http_response)

        path = f"{EXPORT_POLICIES_PATH}/{policy}/rules/{index}"
        return self._request(
            "PATCH", path, f"changing rule {index} of export policy {policy}", call
        )

    def close(self) -> None:
        if self._owned:
            with self._lock:
                self._connection.session.close()

    def _request(self, method: str, path: str, action: str, call: Callable[[], T]) -> Request[T]:
        def send(deadline: Deadline) -> T:
            return self._call(request, action, call, deadline)

        request = Request(method, path, send)
        return request

    def _call(
        self, request: Request[T], action: str, call: Callable[[], T], deadline: Deadline
    ) -> T:
        what = f"{action} ({request})"
        # A call abandoned at an earlier deadline may still hold the session until its own
        # request times out: wait for it no longer than this call's deadline.
        if not self._lock.acquire(timeout=deadline.left()):
            raise OntapTimeout(
                f"ONTAP at {self.origin}: an earlier request still held the connection when"
                f" the deadline passed, before {what}",
                request=str(request),
            )
        try:
            left = deadline.left()
            if left <= 0:
                raise OntapTimeout(
                    f"ONTAP at {self.origin}: deadline passed before {what}", request=str(request)
                )
            self._adapter.request_timeout = (min(CONNECT_TIMEOUT, left), left)
            try:
                return call()
            except NetAppRestError as exc:
                raise self._translate(exc, request, action, deadline) from exc
            except (requests.RequestException, ValueError, TypeError, KeyError) as exc:
                raise OntapError(
                    f"ONTAP at {self.origin} gave an unusable reply while {what}: {_short(exc)}",
                    request=str(request),
                    code="bad_reply",
                ) from exc
        finally:
            self._lock.release()

    def _translate(
        self, exc: NetAppRestError, call: Request[T], action: str, deadline: Deadline
    ) -> OntapError:
        request, what = str(call), f"{action} ({call})"
        status = exc.status_code
        if status is not None:
            return self._refusal(exc, status, what, request)
        cause = getattr(exc, "cause", None)
        if isinstance(cause, requests.Timeout) or deadline.passed():
            return OntapTimeout(
                f"ONTAP at {self.origin} {call.unanswered()} (while {action})", request=request
            )
        if isinstance(cause, requests.exceptions.SSLError):
            return OntapError(
                f"TLS with ONTAP at {self.origin} failed while {what} (check ca_file and"
                f" verify_tls): {_short(cause)}",
                request=request,
                code="tls",
            )
        # A refused, reset or cut connection (or a reply cut short) may work a moment later.
        if isinstance(cause, requests.ConnectionError | requests.exceptions.ChunkedEncodingError):
            return OntapError(
                f"cannot reach ONTAP at {self.origin} while {what}: {_short(cause)}",
                request=request,
                code="connection",
                transient=True,
            )
        return OntapError(
            f"ONTAP call failed while {what}: {_short(exc)}",
            request=request,
            code="library",
            provider_message=_short(exc),
        )

    def _refusal(self, exc: NetAppRestError, status: int, what: str, request: str) -> OntapError:
        """An HTTP error reply, in ONTAP's words, with the Retry-After it carried."""
        message, code = _ontap_error(exc.response_body)
        if status == 401:
            text = "rejected the credentials (authentication failed, HTTP 401)"
        elif status == 403:
            text = "refused: the ONTAP user's role lacks a privilege (HTTP 403)"
        else:
            text = f"refused the request (HTTP {status})"
        detail = f": {message}" if message else ""
        response = exc.http_err_response
        return OntapError(
            f"ONTAP at {self.origin} {text} while {what}{detail}",
            request=request,
            code=code or str(status),
            provider_message=message,
            status=status,
            transient=status in TRANSIENT_STATUSES,
            retry_after=_retry_after(response.http_response if response else None),
        )


def _object(value: object, what: str) -> JsonObject:
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise ValueError(f"{what} is not a JSON object")
    return dict(value)


def _job_uuid(response: requests.Response) -> str | None:
    """The job a 202 reply carries (``{"job": {"uuid": ..., "_links": ...}}``), if any."""
    if not response.content.strip():
        return None
    body = response.json()
    job = body.get("job") if isinstance(body, dict) else None
    if not isinstance(job, dict):
        if response.status_code == 202:
            raise ValueError("a 202 reply without a job")
        return None
    uuid = job.get("uuid")
    if isinstance(uuid, str) and uuid:
        return uuid
    href = ((job.get("_links") or {}).get("self") or {}).get("href")
    if isinstance(href, str) and href.rstrip("/"):
        return href.rstrip("/").rsplit("/", 1)[-1]
    raise ValueError("a job without a uuid")


def _query_text(query: Mapping[str, str]) -> str:
    """A query as it reads in a message (not percent-encoded: ``destination.path=svm:vol``)."""
    return "&".join(f"{key}={value}" for key, value in query.items())


def _retry_after(response: requests.Response | None) -> float | None:
    """The Retry-After header in seconds: delay-seconds or an HTTP-date (RFC 9110)."""
    value = (response.headers.get("Retry-After") or "").strip() if response is not None else ""
    if not value or len(value) > 64:
        return None
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _ontap_error(body: object) -> tuple[str, str | None]:
    """ONTAP's ``{"error": {"message": ..., "code": ...}}``, as (message, code)."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return "", None
    message, code = error.get("message"), error.get("code")
    return (
        " ".join(str(message).split()) if message is not None else "",
        str(code) if code is not None else None,
    )


def _short(value: object) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."
