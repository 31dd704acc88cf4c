"""A stateful stand-in for the ONTAP REST API on 127.0.0.1, over HTTPS with a trustme CA.

It speaks the paths and bodies netapp-ontap uses for SnapMirror: GET/PATCH
``/api/snapmirror/relationships[/{uuid}]``, POST ``.../{uuid}/transfers`` and GET
``/api/cluster/jobs/{uuid}``, with basic authentication, 202 replies carrying a job, and
ONTAP's error object ``{"error": {"message": ..., "code": ...}}``. For the storage fence it
also keeps each volume's export policy: GET ``/api/storage/volumes`` (by ``name`` and
``svm.name``, or by ``nas.export_policy.id``), GET
``/api/protocols/nfs/export-policies/{id}/rules`` and PATCH ``.../rules/{index}``, which
ONTAP carries out at once (200, no job). Time is counted in
requests, not seconds: a job runs for ``job_polls`` requests (any request: a cluster runs
its jobs whether or not anyone may read them), and a change it starts (break, resync,
reverse resync, transfer) advances one step with each GET of the relationship, so tests
are deterministic whatever the client's poll interval. Faults are scripted per method
and path: an error status (with headers such as Retry-After), or no answer at all.

The model follows the ONTAP documentation, read and not run against a live cluster.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import threading
import uuid as uuid_module
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import trustme

LOOPBACK = "127.0.0.1"
RELATIONSHIPS = "/api/snapmirror/relationships"
JOBS = "/api/cluster/jobs"
GB = 1000**3

Step = Callable[["Relationship"], None]


@dataclass
class Recorded:
    """One request as the server received it (after decoding, before authentication)."""

    method: str
    path: str
    query: dict[str, str]
    body: dict[str, Any] | None
    authorized: bool


@dataclass
class Relationship:
    """One SnapMirror relationship and the change in progress on it, if any."""

    uuid: str
    source_path: str
    destination_path: str
    state: str = "snapmirrored"
    healthy: bool = True
    unhealthy_reason: list[dict[str, Any]] = field(default_factory=list)
    lag_time: str | None = "PT8H35M42S"
    transfer_state: str | None = "success"
    transfer_bytes: int = 4096
    transfer_end_time: str | None = "2024-05-01T10:00:00+00:00"
    transfer_uuid: str | None = field(default_factory=lambda: str(uuid_module.uuid4()))
    exported_snapshot: str | None = "snapmirror.1_2147484690.2024-05-01_100000"
    steps: deque[Step] = field(default_factory=deque)

    def render(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "uuid": self.uuid,
            "source": _endpoint(self.source_path),
            "destination": _endpoint(self.destination_path),
            "state": self.state,
            "healthy": self.healthy,
            "_links": {"self": {"href": f"{RELATIONSHIPS}/{self.uuid}"}},
        }
        if self.unhealthy_reason:
            record["unhealthy_reason"] = self.unhealthy_reason
        if self.lag_time is not None:
            record["lag_time"] = self.lag_time
        if self.exported_snapshot is not None:
            record["exported_snapshot"] = self.exported_snapshot
        if self.transfer_state is not None:
            transfer: dict[str, Any] = {
                "state": self.transfer_state,
                "bytes_transferred": self.transfer_bytes,
            }
            if self.transfer_end_time is not None:
                transfer["end_time"] = self.transfer_end_time
            if self.transfer_uuid is not None:
                transfer["uuid"] = self.transfer_uuid
            record["transfer"] = transfer
        return record

    @property
    def transferring(self) -> bool:
        return self.transfer_state in ("queued", "transferring")


# What ONTAP accepts in ro_rule and rw_rule.
SECURITY_FLAVOURS = frozenset({"any", "none", "never", "krb5", "krb5i", "krb5p", "ntlm", "sys"})
POLICIES = "/api/protocols/nfs/export-policies"
VOLUMES = "/api/storage/volumes"


@dataclass
class ExportRuleRecord:
    index: int
    clients: list[str]
    ro_rule: list[str] = field(default_factory=lambda: ["sys"])
    rw_rule: list[str] = field(default_factory=lambda: ["sys"])

    def render(self, policy: int) -> dict[str, Any]:
        return {
            "policy": {"id": policy},
            "index": self.index,
            "clients": [{"match": match} for match in self.clients],
            "ro_rule": list(self.ro_rule),
            "rw_rule": list(self.rw_rule),
        }


@dataclass
class ExportPolicyRecord:
    id: int
    name: str
    svm: str
    rules: dict[int, ExportRuleRecord]


@dataclass
class VolumeRecord:
    uuid: str
    svm: str
    name: str
    policy: int | None

    def render(self, policies: dict[int, ExportPolicyRecord]) -> dict[str, Any]:
        record: dict[str, Any] = {"uuid": self.uuid, "name": self.name, "svm": {"name": self.svm}}
        if self.policy is not None:
            record["nas"] = {
                "export_policy": {"id": self.policy, "name": policies[self.policy].name}
            }
        return record


def _endpoint(path: str) -> dict[str, Any]:
    return {"path": path, "svm": {"name": path.partition(":")[0]}}


@dataclass
class Job:
    uuid: str
    description: str
    polls_left: int
    on_success: Callable[[], None]
    failure: tuple[str, str] | None = None  # (message, code) when scripted to fail
    state: str = "queued"
    message: str = "Queued"
    code: int = 0
    error: dict[str, str] | None = None

    def advance(self) -> None:
        if self.state in ("success", "failure"):
            return
        if self.polls_left > 0:
            self.polls_left -= 1
            self.state, self.message = "running", "In progress"
            return
        if self.failure is not None:
            message, code = self.failure
            self.state, self.message, self.code = "failure", message, int(code)
            self.error = {"message": message, "code": code}
            return
        self.state, self.message = "success", "success"
        self.on_success()

    def render(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "uuid": self.uuid,
            "description": self.description,
            "state": self.state,
            "message": self.message,
            "code": self.code,
            "_links": {"self": {"href": f"{JOBS}/{self.uuid}"}},
        }
        if self.error is not None:
            record["error"] = self.error
        return record


@dataclass
class Fault:
    """A scripted failure for requests whose method is ``method`` and whose path contains
    ``path_part``: HTTP ``status`` with ONTAP's error object and ``headers``, or, when
    ``hang``, no answer until the server closes. ``times`` requests are hit (None: all)."""

    method: str
    path_part: str
    status: int = 500
    message: str = ""
    code: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False
    times: int | None = 1

    def take(self, recorded: Recorded) -> bool:
        """Whether this fault hits ``recorded`` (counting it)."""
        if recorded.method != self.method or self.path_part not in recorded.path:
            return False
        if self.times is not None:
            self.times -= 1
        return True


class ApiError(Exception):
    """An ONTAP error reply: HTTP status and ONTAP's own message and code."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


class ContractServer:
    """The ONTAP stand-in. Use as a context manager; ``ca_file`` verifies its certificate.

    Knobs: ``job_polls`` (requests a job stays running), ``settle_polls`` (relationship
    GETs before a break shows broken_off), ``transfer_polls`` (GETs a transfer stays
    transferring), ``fail_next_job()``, ``reject_next()``, ``fail()``, ``hang_next()``,
    ``stop_answering()``.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        username: str = "nfsfo",
        password: str = "s3cret-Pa55",
        job_polls: int = 2,
        settle_polls: int = 1,
        transfer_polls: int = 3,
    ) -> None:
        self.username = username
        self.password = password
        self.job_polls = job_polls
        self.settle_polls = settle_polls
        self.transfer_polls = transfer_polls
        self.relationships: dict[str, Relationship] = {}
        self.volumes: dict[str, VolumeRecord] = {}  # by path, svm:volume
        self.policies: dict[int, ExportPolicyRecord] = {}
        self.jobs: dict[str, Job] = {}
        self.requests: list[Recorded] = []
        self.lock = threading.RLock()
        self._next_job_failure: tuple[str, str] | None = None
        self._faults: list[Fault] = []
        self._next_transfer_failure: tuple[str, str] | None = None
        self._drops = 0
        self._hanging = threading.Event()
        self._released = threading.Event()
        ca = trustme.CA()
        self.ca_file = workdir / "ontap-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(LOOPBACK).configure_cert(self._tls)
        self._httpd = _Server((LOOPBACK, 0), _Handler)
        self._httpd.contract = self
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def __enter__(self) -> ContractServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._released.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    # -- scripting -----------------------------------------------------------------

    def add_relationship(self, source_path: str, destination_path: str, **kw: Any) -> Relationship:
        """A relationship, and each of its volumes (with an export policy of its own) unless
        already added."""
        relationship = Relationship(str(uuid_module.uuid4()), source_path, destination_path, **kw)
        with self.lock:
            self.relationships[relationship.uuid] = relationship
        for path in (source_path, destination_path):
            if path not in self.volumes:
                self.add_volume(path)
        return relationship

    def add_volume(self, path: str, *, policy: int | None = None) -> VolumeRecord:
        """A volume ``svm:name`` using export policy ``policy`` (by id), or a new one of its
        own with two rules: the clients' subnet read-write, and a monitoring host read-only."""
        svm, _, name = path.partition(":")
        with self.lock:
            if policy is None:
                policy = len(self.policies) + 1
                rules = {
                    1: ExportRuleRecord(1, ["10.1.0.0/16"]),
                    2: ExportRuleRecord(2, ["10.9.0.5"], rw_rule=["never"]),
                }
                self.policies[policy] = ExportPolicyRecord(policy, f"{name}_policy", svm, rules)
            volume = VolumeRecord(str(uuid_module.uuid4()), svm, name, policy)
            self.volumes[path] = volume
        return volume

    def rw_rules(self, path: str) -> list[list[str]]:
        """The rw_rule of each rule of the export policy of the volume at ``path``."""
        with self.lock:
            policy = self.policies[self.volumes[path].policy or 0]
            return [list(rule.rw_rule) for _, rule in sorted(policy.rules.items())]

    def fail_next_job(self, message: str, code: str) -> None:
        """The next job started by a PATCH or POST ends in failure with this error."""
        self._next_job_failure = (message, code)

    def fail_next_transfer(self, message: str, code: str) -> None:
        """The next transfer (resync, reverse resync or update) ends ``failed``."""
        self._next_transfer_failure = (message, code)

    def reject_next(self, method: str, status: int, message: str, code: str) -> None:
        """The next ``method`` request is refused at once with ONTAP's error object."""
        self.fail(method, "", status, message, code)

    def fail(
        self,
        method: str,
        path_part: str,
        status: int,
        message: str = "Internal error.",
        code: str = "1",
        *,
        headers: dict[str, str] | None = None,
        times: int | None = 1,
    ) -> None:
        """The next ``times`` (None: every) ``method`` requests whose path contains
        ``path_part`` are answered ``status`` with ONTAP's error object and ``headers``."""
        fault = Fault(method, path_part, status, message, code, headers or {}, times=times)
        with self.lock:
            self._faults.append(fault)

    def hang_next(self, method: str, path_part: str = "", *, times: int | None = 1) -> None:
        """The next ``times`` matching requests are read and never answered (others are)."""
        with self.lock:
            self._faults.append(Fault(method, path_part, hang=True, times=times))

    def drop_next(self, count: int) -> None:
        """The next ``count`` requests are read, then the connection is closed unanswered."""
        self._drops = count

    def clear_faults(self) -> None:
        """Scripted faults (``fail``, ``hang_next``) that have not run out are dropped."""
        with self.lock:
            self._faults.clear()

    def stop_answering(self) -> None:
        """From now on, requests are read and never answered (a hung management LIF)."""
        self._hanging.set()

    def calls(self, method: str, path_part: str = "") -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.method == method and path_part in r.path]

    # -- request handling (called from handler threads) -----------------------------

    def handle(self, recorded: Recorded) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Status, body and extra headers; ``ConnectionAbortedError`` for no answer."""
        if self._hanging.is_set():
            self._released.wait()
            raise ConnectionAbortedError("the server stopped answering")
        with self.lock:
            if self._drops > 0:
                self._drops -= 1
                raise ConnectionAbortedError("the server dropped the connection")
            self.requests.append(recorded)
            if not recorded.authorized:
                return 401, _error_body("not authorized for that command", "6"), {}
            for job in self.jobs.values():
                job.advance()
            fault = self._fault(recorded)
            if fault is None:
                try:
                    return (*self._route(recorded), {})
                except ApiError as exc:
                    return exc.status, _error_body(exc.message, exc.code), {}
            if not fault.hang:
                return fault.status, _error_body(fault.message, fault.code), fault.headers
        self._released.wait()  # outside the lock: other requests are answered meanwhile
        raise ConnectionAbortedError("the server did not answer this request")

    def _fault(self, recorded: Recorded) -> Fault | None:
        for fault in self._faults:
            if fault.take(recorded):
                if fault.times == 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _route(self, r: Recorded) -> tuple[int, dict[str, Any]]:
        parts = r.path.rstrip("/").split("/")
        if r.path.startswith(VOLUMES) and len(parts) == 4 and r.method == "GET":
            return 200, self._volume_collection(r.query)
        if r.path.startswith(POLICIES):
            return self._export_policy_route(r, parts)
        if r.path.startswith(JOBS) and r.method == "GET":
            return 200, self._jobs(parts[4] if len(parts) == 5 else r.query.get("uuid"), r.query)
        if not r.path.startswith(RELATIONSHIPS):
            raise ApiError(404, f'API not found: "{r.path}"', "3")
        if len(parts) == 4 and r.method == "GET":
            return 200, self._collection(r.query)
        if len(parts) == 5 and r.method == "GET":
            relationship = self._relationship(parts[4])
            self._advance(relationship)
            return 200, relationship.render()
        if len(parts) == 5 and r.method == "PATCH":
            return 202, self._patch(self._relationship(parts[4]), r.body or {}, r.query)
        if len(parts) == 6 and parts[5] == "transfers" and r.method == "POST":
            return 202, self._transfer(self._relationship(parts[4]))
        raise ApiError(405, f"method {r.method} not allowed on {r.path}", "4")

    def _volume_collection(self, query: dict[str, str]) -> dict[str, Any]:
        def matches(volume: VolumeRecord) -> bool:
            values = {
                "name": volume.name,
                "svm.name": volume.svm,
                "nas.export_policy.id": str(volume.policy),
                "uuid": volume.uuid,
            }
            return all(values.get(key) == value for key, value in query.items() if key in values)

        records = [v.render(self.policies) for v in self.volumes.values() if matches(v)]
        return {"records": records, "num_records": len(records)}

    def _export_policy_route(self, r: Recorded, parts: list[str]) -> tuple[int, dict[str, Any]]:
        # /api/protocols/nfs/export-policies/{id}/rules[/{index}]
        if len(parts) < 7 or parts[6] != "rules" or not parts[5].isdigit():
            raise ApiError(404, f'API not found: "{r.path}"', "3")
        policy = self.policies.get(int(parts[5]))
        if policy is None:
            raise ApiError(404, "entry doesn't exist", "4")
        if len(parts) == 7 and r.method == "GET":
            records = [rule.render(policy.id) for _, rule in sorted(policy.rules.items())]
            return 200, {"records": records, "num_records": len(records)}
        if len(parts) == 8 and r.method == "PATCH" and parts[7].isdigit():
            rule = policy.rules.get(int(parts[7]))
            if rule is None:
                raise ApiError(404, "entry doesn't exist", "4")
            self._patch_rule(rule, r.body or {})
            return 200, {}
        raise ApiError(405, f"method {r.method} not allowed on {r.path}", "4")

    @staticmethod
    def _patch_rule(rule: ExportRuleRecord, body: dict[str, Any]) -> None:
        changes = {key: value for key, value in body.items() if key not in ("index", "policy")}
        if body.get("index", rule.index) != rule.index:
            raise ApiError(400, "this model does not move rules to another index", "262179")
        unknown = set(changes) - {"ro_rule", "rw_rule"}
        if unknown:
            raise ApiError(400, f"this model changes ro_rule and rw_rule only, not {unknown}", "2")
        for key, value in changes.items():
            if not isinstance(value, list) or not set(value) <= SECURITY_FLAVOURS or not value:
                raise ApiError(400, f'Invalid value "{value}" for field "{key}"', "262179")
        for key, value in changes.items():
            setattr(rule, key, list(value))

    @staticmethod
    def _advance(rel: Relationship) -> None:
        if rel.steps:
            rel.steps.popleft()(rel)

    def _relationship(self, uuid: str) -> Relationship:
        if uuid not in self.relationships:
            raise ApiError(404, "entry doesn't exist", "4")
        return self.relationships[uuid]

    def _jobs(self, uuid: str | None, query: dict[str, str]) -> dict[str, Any]:
        """One job (``/jobs/{uuid}``) or a collection queried by uuid."""
        if uuid is None or uuid not in self.jobs:
            if "uuid" in query:
                return {"records": [], "num_records": 0}
            raise ApiError(404, "entry doesn't exist", "4")
        job = self.jobs[uuid]
        if "uuid" in query:
            return {"records": [job.render()], "num_records": 1}
        return job.render()

    def _collection(self, query: dict[str, str]) -> dict[str, Any]:
        keys = {
            "uuid": "uuid",
            "source.path": "source_path",
            "destination.path": "destination_path",
        }
        wanted = {keys[k]: v for k, v in query.items() if k in keys}
        records = []
        for rel in list(self.relationships.values()):
            if all(getattr(rel, name) == value for name, value in wanted.items()):
                self._advance(rel)
                records.append(rel.render())
        return {"records": records, "num_records": len(records)}

    def _start_job(self, description: str, on_success: Callable[[], None]) -> dict[str, Any]:
        job = Job(str(uuid_module.uuid4()), description, self.job_polls, on_success)
        job.failure, self._next_job_failure = self._next_job_failure, None
        self.jobs[job.uuid] = job
        return {"job": {"uuid": job.uuid, "_links": {"self": {"href": f"{JOBS}/{job.uuid}"}}}}

    def _patch(
        self, rel: Relationship, body: dict[str, Any], query: dict[str, str]
    ) -> dict[str, Any]:
        state = body.get("state")
        source = (body.get("source") or {}).get("path")
        destination = (body.get("destination") or {}).get("path")
        description = f"PATCH {RELATIONSHIPS}/{rel.uuid}"
        if state == "broken_off":
            if rel.state == "uninitialized":
                raise ApiError(400, "Relationship is uninitialized: cannot break.", "13303818")
            if rel.transferring and query.get("force") != "true":
                raise ApiError(409, "Transfer in progress: use force to break.", "13303812")
            return self._start_job(description, lambda: self._schedule_break(rel))
        if state == "snapmirrored" and source is None and destination is None:
            if rel.state != "broken_off":
                raise ApiError(400, f"Cannot resync: relationship is {rel.state}.", "13303819")
            return self._start_job(description, lambda: self._schedule_resync(rel, swap=False))
        if state == "snapmirrored" and (source, destination) == (
            rel.destination_path,
            rel.source_path,
        ):
            if rel.state != "broken_off":
                raise ApiError(400, f"Cannot reverse: relationship is {rel.state}.", "13303819")
            return self._start_job(description, lambda: self._schedule_resync(rel, swap=True))
        raise ApiError(400, f"unsupported PATCH body {json.dumps(body)}", "262179")

    def _transfer(self, rel: Relationship) -> dict[str, Any]:
        if rel.state != "snapmirrored":
            raise ApiError(400, f"Cannot update: relationship is {rel.state}.", "13303820")
        description = f"POST {RELATIONSHIPS}/{rel.uuid}/transfers"
        return self._start_job(description, lambda: self._schedule_transfer(rel))

    # -- transitions, one step per GET of the relationship ---------------------------

    def _schedule_break(self, rel: Relationship) -> None:
        def broken(r: Relationship) -> None:
            if r.transferring:
                r.transfer_state = "aborted"
            r.state = "broken_off"

        rel.steps = deque([_nothing] * self.settle_polls + [broken])

    def _schedule_resync(self, rel: Relationship, *, swap: bool) -> None:
        def start(r: Relationship) -> None:
            if swap:
                r.source_path, r.destination_path = r.destination_path, r.source_path
            r.transfer_state, r.transfer_bytes = "transferring", 0
            r.transfer_uuid = str(uuid_module.uuid4())

        rel.steps = deque([start, *self._transfer_steps(), self._transfer_end()])

    def _schedule_transfer(self, rel: Relationship) -> None:
        def queued(r: Relationship) -> None:
            r.transfer_state, r.transfer_bytes = "queued", 0
            r.transfer_uuid = str(uuid_module.uuid4())

        rel.steps = deque([queued, *self._transfer_steps(), self._transfer_end()])

    def _transfer_end(self) -> Step:
        failure, self._next_transfer_failure = self._next_transfer_failure, None
        if failure is None:
            return _mirrored

        def failed(r: Relationship) -> None:
            r.transfer_state, r.healthy = "failed", False
            r.unhealthy_reason = [{"message": failure[0], "code": failure[1], "arguments": []}]
            r.transfer_end_time = "2024-05-01T12:30:00+00:00"

        return failed

    def _transfer_steps(self) -> list[Step]:
        def grow(r: Relationship) -> None:
            r.transfer_state = "transferring"
            r.transfer_bytes += int(1.2 * GB / max(self.transfer_polls, 1))

        return [grow] * self.transfer_polls


def _nothing(rel: Relationship) -> None:
    del rel


def _mirrored(rel: Relationship) -> None:
    rel.state, rel.healthy, rel.lag_time = "snapmirrored", True, "PT0S"
    rel.transfer_state = "success"
    rel.transfer_end_time = "2024-05-01T12:30:00+00:00"


def _error_body(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "code": code}}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    contract: ContractServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        del request, client_address  # a refused handshake or a dropped client: not news


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        # The TLS handshake runs in the request's own thread, never in the accept loop.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.request = self.server.contract._tls.wrap_socket(self.request, server_side=True)
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        del format, args

    def do_GET(self) -> None:
        self._serve("GET")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw.strip() else None
        authorization = self.headers.get("Authorization", "")
        recorded = Recorded(
            method,
            split.path,
            dict(parse_qsl(split.query, keep_blank_values=True)),
            body,
            authorized=self._authorized(authorization),
        )
        try:
            status, reply, headers = self.server.contract.handle(recorded)
        except ConnectionAbortedError:
            self.close_connection = True
            return
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/hal+json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="ONTAP"')
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self, header: str) -> bool:
        contract = self.server.contract
        expected = f"{contract.username}:{contract.password}".encode()
        return header == "Basic " + base64.b64encode(expected).decode()
