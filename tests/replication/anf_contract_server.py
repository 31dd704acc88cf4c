"""A local HTTPS stand-in for the Azure NetApp Files management API, for contract tests.

It serves the REST paths ``azure-mgmt-netapp`` calls (at the SDK's api-version) for one
replication relationship between two volumes, with ANF's transitions: break makes the
destination writable (Broken); a resync on the destination mirrors again in the same
direction; a resync on the source swaps the roles. Each volume has export policy rules,
read with the volume and replaced whole by a volume update (PATCH of
``properties.exportPolicy.rules``), a long-running operation like the others.
Operations answer 202 with ``Location``, ``Azure-AsyncOperation`` and ``Retry-After: 0``;
their status passes through intermediate values ("BreakReplication", "InProgress")
before "Succeeded" or a scripted "Failed". Errors use ARM's body,
``{"error": {"code", "message"}}``.

What is ANF's documented behaviour and what is this model's own choice:
- documented: the paths, bodies and fields; break on the destination with
  ``forceBreakReplication``; resync on the source reverses; break only when mirrored;
  resync only when broken; LRO headers and the async status document.
- this model's choice (not documented): the error codes and HTTP statuses of refusals
  (400 for a wrong state, 409 "Conflict" for a non-forced break while a transfer runs,
  409 "OperationInProgress" for a volume update while an operation on that volume has
  not ended), the intermediate status of an update ("Updating"), and when an
  operation's state change lands (at its "Succeeded" poll).

Only 127.0.0.1 is served, over TLS with a ``trustme`` CA; every call is recorded.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import trustme
from azure.core.credentials import AccessToken

API_VERSION = "2026-08-01"  # what azure-mgmt-netapp 18.0.0 sends; anything else is refused
SUBSCRIPTION = "6e1c5f57-0c4e-4b1e-9d1f-0a3b2c4d5e6f"
RESOURCE_GROUP = "rg-crr"
ACCOUNT = "anf-acct"
POOL = "pool1"
LOCATION = "westeurope"
TOKEN = "contract-test-token-9f8e7d6c"  # a fake bearer token, for the credential stub

_VOLUME = re.compile(
    r"/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.NetApp"
    r"/netAppAccounts/(?P<account>[^/]+)/capacityPools/(?P<pool>[^/]+)/volumes/(?P<vol>[^/]+)"
    r"(?P<action>/[A-Za-z]+)?",
    re.IGNORECASE,
)
_OPERATION = re.compile(
    r"/subscriptions/(?P<sub>[^/]+)/providers/Microsoft\.NetApp/locations/(?P<loc>[^/]+)"
    r"/(?P<kind>operationsStatus|operationResults)/(?P<op>[^/]+)",
    re.IGNORECASE,
)
_OPERATION_STATUS = {
    "breakReplication": "BreakReplication",
    "resyncReplication": "ResyncReplication",
    "update": "Updating",
}
# Every volume starts with two rules: the clients' subnet read-write (NFSv3), and a
# monitoring subnet read-only.
DEFAULT_RULES: tuple[dict[str, Any], ...] = (
    {
        "ruleIndex": 1,
        "allowedClients": "10.1.0.0/16",
        "unixReadOnly": False,
        "unixReadWrite": True,
        "nfsv3": True,
        "nfsv41": False,
        "hasRootAccess": True,
        "chownMode": "Restricted",
    },
    {
        "ruleIndex": 2,
        "allowedClients": "10.9.0.0/24",
        "unixReadOnly": True,
        "unixReadWrite": False,
        "nfsv3": True,
        "nfsv41": False,
        "hasRootAccess": False,
        "chownMode": "Restricted",
    },
)


def volume_id(name: str) -> str:
    return (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers"
        f"/Microsoft.NetApp/netAppAccounts/{ACCOUNT}/capacityPools/{POOL}/volumes/{name}"
    )


class StaticTokenCredential:
    """Stands in for Microsoft Entra ID, which cannot be reached here: a fixed token.

    Not a mock of the code under test: the SDK's bearer-token policy still asks for it
    and sends it, and the server checks it.
    """

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(TOKEN, int(time.time()) + 3600)


@dataclass(frozen=True)
class Call:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    authorization: str | None

    @property
    def volume(self) -> str | None:
        match = _VOLUME.fullmatch(self.path)
        return match["vol"] if match else None

    @property
    def action(self) -> str:
        match = _VOLUME.fullmatch(self.path)
        return (match["action"] or "").lstrip("/") if match else ""


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # sent as it is instead of the JSON of ``body``


@dataclass
class _Operation:
    action: str
    apply: Callable[[], None]
    statuses: list[str]
    failure: tuple[str, str] | None
    outcome: str | None = None
    volume: str | None = None


@dataclass
class Snapshot:
    name: str
    created: datetime


class AnfModel:
    """One replication relationship, as ANF keeps it, with a transfer-in-progress switch."""

    def __init__(self, source: str, destination: str) -> None:
        self.volumes = (source, destination)
        self.endpoint = {source: "src", destination: "dst"}
        self.exists = True  # False after deleteReplication: no replication object at all
        self.mirror_state = "Mirrored"
        self.relationship_status: str | None = None  # overrides the transfer switch
        self.transferring = False
        self.transfer_ends_after_status_reads: int | None = None
        self.healthy = True
        self.total_progress: str | None = "1048576"
        self.error_message: str | None = None
        self.export_rules: dict[str, list[dict[str, Any]]] = {
            volume: [dict(rule) for rule in DEFAULT_RULES] for volume in self.volumes
        }
        now = datetime.now(UTC)
        self.snapshots: dict[str, list[Snapshot]] = {
            volume: [Snapshot("snapmirror.0001.0002.0003", now - timedelta(minutes=7))]
            for volume in self.volumes
        }

    def other(self, volume: str) -> str:
        return self.volumes[1] if volume == self.volumes[0] else self.volumes[0]

    def status_word(self) -> str:
        if self.relationship_status is not None:
            return self.relationship_status
        return "Transferring" if self.transferring else "Idle"

    def read_status(self) -> dict[str, Any]:
        if self.transferring and self.transfer_ends_after_status_reads is not None:
            if self.transfer_ends_after_status_reads <= 0:
                self.end_transfer()
            else:
                self.transfer_ends_after_status_reads -= 1
        body: dict[str, Any] = {
            "healthy": self.healthy,
            "relationshipStatus": self.status_word(),
            "mirrorState": self.mirror_state,
            "totalProgress": self.total_progress,
        }
        if self.error_message is not None:
            body["errorMessage"] = self.error_message
        return body

    def end_transfer(self) -> None:
        self.transferring = False
        self.transfer_ends_after_status_reads = None
        self.add_snapmirror_snapshot()

    def add_snapmirror_snapshot(self, age: timedelta = timedelta(0)) -> None:
        created = datetime.now(UTC) - age
        name = f"snapmirror.{uuid.uuid4().hex[:8]}"
        for volume in self.volumes:
            self.snapshots[volume].append(Snapshot(name, created))


class ContractServer:
    """The HTTPS server, its model, its script of faults and its record of calls."""

    def __init__(self, ca: trustme.CA, ca_path: Path, source: str, destination: str) -> None:
        self.ca_path = ca_path
        self.model = AnfModel(source, destination)
        self.calls: list[Call] = []
        self.intermediate_polls = 2
        self.status_poll_delay = 0.0
        self.operation_retry_after = "0"  # what operation status answers ask the poller to wait
        self._throttle: dict[str, list[str]] = {}
        self._faults: dict[str, list[Reply]] = {}  # answered once each, in order
        self._forbidden: set[str] = set()
        self._forbid_after: dict[str, str] = {}
        self._fail: dict[str, tuple[str, str]] = {}
        self._transfer_at_next: set[str] = set()
        self._hang_on: str | None = None
        self._released = threading.Event()
        self._operations: dict[str, _Operation] = {}
        self._held = False  # operations stay in their intermediate statuses meanwhile
        self._lock = threading.Lock()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        self._httpd = _HttpServer(("127.0.0.1", 0), _Handler, self, context)
        self.port = self._httpd.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._released.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    # -- the script of faults ----------------------------------------------------------

    def throttle_next(self, method: str, action: str, retry_after: str = "0") -> None:
        """Answer the next ``method`` to ``action`` ("" for the volume) with 429 once."""
        with self._lock:
            self._throttle.setdefault(f"{method} {action}", []).append(retry_after)

    def answer_next(self, method: str, action: str, *replies: Reply) -> None:
        """Answer the next requests of ``method`` to ``action`` with ``replies``, in order."""
        with self._lock:
            self._faults.setdefault(f"{method} {action}", []).extend(replies)

    def forbid(self, method: str, action: str) -> None:
        """From now on ``method`` to ``action`` gets 403, as a role without that right."""
        with self._lock:
            self._forbidden.add(f"{method} {action}")

    def forbid_after(self, trigger: str, method: str, action: str) -> None:
        """Once a request to ``trigger`` arrives, ``method`` to ``action`` gets 403."""
        with self._lock:
            self._forbid_after[trigger] = f"{method} {action}"

    def fail_next_operation(self, action: str, code: str, message: str) -> None:
        """The next ``action`` is accepted (202) and then ends Failed with this error."""
        with self._lock:
            self._fail[action] = (code, message)

    def start_transfer_at_next(self, action: str) -> None:
        """A transfer starts just before the next ``action`` arrives (a race)."""
        with self._lock:
            self._transfer_at_next.add(action)

    def hold_operations(self, held: bool = True) -> None:
        """While held, accepted operations stay in their intermediate statuses: they run
        until released (an operation that outlasts a caller's deadline)."""
        with self._lock:
            self._held = held

    def stop_answering(self, path_part: str = "") -> None:
        """From now on, requests whose path contains ``path_part`` get no answer at all."""
        with self._lock:
            self._hang_on = path_part

    # -- what was seen ---------------------------------------------------------------

    def posts(self, action: str | None = None) -> list[Call]:
        with self._lock:
            return [
                c
                for c in self.calls
                if c.method == "POST" and c.volume and (action is None or c.action == action)
            ]

    def requests_to(self, action: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.volume and c.action == action]

    def patches(self) -> list[Call]:
        """The volume updates received."""
        with self._lock:
            return [c for c in self.calls if c.method == "PATCH" and c.volume]

    # -- serving ----------------------------------------------------------------------

    def handle(
        self, method: str, target: str, raw: bytes, authorization: str | None
    ) -> Reply | None:
        url = urlsplit(target)
        query = dict(parse_qsl(url.query))
        body = json.loads(raw) if raw else None
        with self._lock:
            self.calls.append(Call(method, url.path, query, body, authorization))
            hang = self._hang_on is not None and self._hang_on in url.path
        if hang:
            self._released.wait(60)
            return None
        if authorization != f"Bearer {TOKEN}":
            return _error(401, "AuthenticationFailed", "Authentication failed.")
        if query.get("api-version") != API_VERSION:
            return _error(400, "InvalidApiVersionParameter", f"api-version {API_VERSION} only")
        if (operation := _OPERATION.fullmatch(url.path)) is not None:
            if self.status_poll_delay and operation["kind"] == "operationsStatus":
                time.sleep(self.status_poll_delay)
            with self._lock:
                return self._operation(operation["kind"], operation["op"])
        match = _VOLUME.fullmatch(url.path)
        if match is None:
            return _error(404, "NotFound", f"no such path {url.path}")
        action = (match["action"] or "").lstrip("/")
        with self._lock:
            if action in self._forbid_after:
                self._forbidden.add(self._forbid_after.pop(action))
            faults = self._faults.get(f"{method} {action}")
            if faults:
                return faults.pop(0)
            if f"{method} {action}" in self._forbidden:
                return _error(403, "AuthorizationFailed", f"no right to {method} {action}")
            throttled = self._throttle.get(f"{method} {action}")
            if throttled:
                retry_after = throttled.pop(0)
                return _error(429, "TooManyRequests", "Too many requests.", retry_after)
            return self._volume_request(method, volume_id(match["vol"]), action, body)

    def _volume_request(self, method: str, volume: str, action: str, body: Any) -> Reply:
        model = self.model
        if volume not in model.volumes:
            return _error(404, "ResourceNotFound", f"volume {volume} not found")
        routes: dict[tuple[str, str], Callable[[str, Any], Reply]] = {
            ("GET", ""): self._get_volume,
            ("GET", "replicationStatus"): self._replication_status,
            ("GET", "snapshots"): self._snapshots,
            ("POST", "listReplications"): self._list_replications,
            ("POST", "breakReplication"): self._break,
            ("POST", "resyncReplication"): self._resync,
            ("PATCH", ""): self._update,
        }
        route = routes.get((method, action))
        if route is None:
            return _error(405, "MethodNotAllowed", f"{method} {action} is not modelled")
        if action in self._transfer_at_next:
            self._transfer_at_next.discard(action)
            model.transferring = True
        return route(volume, body)

    def _get_volume(self, volume: str, _body: Any) -> Reply:
        model = self.model
        properties: dict[str, Any] = {
            "creationToken": volume.rsplit("/", 1)[-1],
            "usageThreshold": 107374182400,
            "subnetId": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}"
            "/providers/Microsoft.Network/virtualNetworks/vnet/subnets/anf",
            "provisioningState": "Succeeded",
            "exportPolicy": {"rules": [dict(rule) for rule in model.export_rules[volume]]},
        }
        if model.exists:
            properties["volumeType"] = "DataProtection" if model.endpoint[volume] == "dst" else ""
            properties["dataProtection"] = {
                "replication": {
                    "endpointType": model.endpoint[volume],
                    "remoteVolumeResourceId": model.other(volume),
                    "replicationSchedule": "_10minutely",
                    "mirrorState": model.mirror_state,
                    "relationshipStatus": model.status_word(),
                }
            }
        return Reply(200, {**_resource(volume, "volumes"), "properties": properties})

    def _replication_status(self, volume: str, _body: Any) -> Reply:
        if not self.model.exists:
            return _error(404, "VolumeReplicationMissing", "no replication for this volume")
        return Reply(200, self.model.read_status())

    def _snapshots(self, volume: str, _body: Any) -> Reply:
        value = [
            {
                **_resource(f"{volume}/snapshots/{s.name}", "volumes/snapshots"),
                "properties": {
                    "snapshotId": str(uuid.uuid5(uuid.NAMESPACE_URL, s.name)),
                    "created": s.created.isoformat().replace("+00:00", "Z"),
                    "provisioningState": "Succeeded",
                },
            }
            for s in self.model.snapshots[volume]
        ]
        return Reply(200, {"value": value})

    def _list_replications(self, volume: str, _body: Any) -> Reply:
        model = self.model
        if not model.exists:
            return Reply(200, {"value": []})
        entry = {
            "replicationId": str(uuid.uuid5(uuid.NAMESPACE_URL, "".join(model.volumes))),
            "endpointType": model.endpoint[volume],
            "replicationSchedule": "_10minutely",
            "remoteVolumeResourceId": model.other(volume),
            "remoteVolumeRegion": LOCATION,
            "mirrorState": model.mirror_state,
            "replicationCreationTime": "2026-01-05T10:00:00Z",
        }
        return Reply(200, {"value": [entry]})

    def _break(self, volume: str, body: Any) -> Reply:
        model = self.model
        force = bool(body and body.get("forceBreakReplication"))
        if not model.exists or model.endpoint[volume] != "dst":
            return _error(400, "BadRequest", "Break replication only on a destination volume.")
        if model.mirror_state != "Mirrored":
            return _error(400, "BadRequest", f"Cannot break: mirror state {model.mirror_state}.")
        if model.transferring and not force:
            return _error(
                409, "Conflict", "A transfer is in progress; set forceBreakReplication to break."
            )

        def apply() -> None:
            model.transferring = False
            model.mirror_state = "Broken"

        return self._accept("breakReplication", apply)

    def _resync(self, volume: str, _body: Any) -> Reply:
        model = self.model
        if not model.exists or model.mirror_state != "Broken":
            return _error(400, "BadRequest", "Resync requires a broken replication.")

        def apply() -> None:
            if model.endpoint[volume] == "src":  # on the source: reverse, the roles swap
                model.endpoint[volume] = "dst"
                model.endpoint[model.other(volume)] = "src"
            model.mirror_state = "Mirrored"
            model.add_snapmirror_snapshot()

        return self._accept("resyncReplication", apply)

    def _update(self, volume: str, body: Any) -> Reply:
        """A volume update; this model takes only ``properties.exportPolicy.rules``."""
        properties = body.get("properties") if isinstance(body, dict) else None
        policy = properties.get("exportPolicy") if isinstance(properties, dict) else None
        rules = policy.get("rules") if isinstance(policy, dict) else None
        if not isinstance(rules, list) or set(properties) != {"exportPolicy"}:
            return _error(400, "BadRequest", "This model updates exportPolicy.rules only.")
        if not all(isinstance(rule, dict) and "ruleIndex" in rule for rule in rules):
            return _error(400, "InvalidExportPolicyRule", "Each rule needs a ruleIndex.")
        running = [
            op.action
            for op in self._operations.values()
            if op.volume == volume and op.outcome is None
        ]
        if running:
            return _error(
                409,
                "OperationInProgress",
                f"Another operation ({running[0]}) is in progress on this volume.",
            )
        model = self.model

        def apply() -> None:
            model.export_rules[volume] = [dict(rule) for rule in rules]

        return self._accept("update", apply, volume)

    def _accept(self, action: str, apply: Callable[[], None], volume: str | None = None) -> Reply:
        op = uuid.uuid4().hex
        intermediate = [_OPERATION_STATUS[action], "InProgress"]
        statuses = [intermediate[i % 2] for i in range(self.intermediate_polls)]
        self._operations[op] = _Operation(
            action, apply, statuses, self._fail.pop(action, None), volume=volume
        )
        base = f"{self.url}/subscriptions/{SUBSCRIPTION}/providers/Microsoft.NetApp/locations"
        suffix = f"{op}?api-version={API_VERSION}"
        headers = {
            "Location": f"{base}/{LOCATION}/operationResults/{suffix}",
            "Azure-AsyncOperation": f"{base}/{LOCATION}/operationsStatus/{suffix}",
            "Retry-After": "0",
        }
        return Reply(202, None, headers)

    def _operation(self, kind: str, op_id: str) -> Reply:
        op = self._operations.get(op_id)
        if op is None:
            return _error(404, "OperationNotFound", f"no operation {op_id}")
        if kind == "operationResults":
            return Reply(200 if op.outcome else 202, None, {"Retry-After": "0"})
        body: dict[str, Any] = {"id": op_id, "name": op_id}
        if self._held and op.outcome is None:
            body["status"] = _OPERATION_STATUS[op.action]
        elif op.statuses:
            body["status"] = op.statuses.pop(0)
        elif op.failure is not None:
            op.outcome = "Failed"
            code, message = op.failure
            body.update(status="Failed", error={"code": code, "message": message})
        else:
            if op.outcome is None:
                op.apply()
                op.outcome = "Succeeded"
            body["status"] = "Succeeded"
        return Reply(200, body, {"Retry-After": self.operation_retry_after})


def _resource(resource_id: str, kind: str) -> dict[str, Any]:
    # ARM names a nested resource by its chain of names: account/pool/volume[/snapshot].
    return {
        "id": resource_id,
        "name": "/".join(resource_id.split("/")[8::2]),
        "type": f"Microsoft.NetApp/netAppAccounts/capacityPools/{kind}",
        "location": LOCATION,
    }


def _error(status: int, code: str, message: str, retry_after: str | None = None) -> Reply:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return Reply(status, {"error": {"code": code, "message": message}}, headers)


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        contract: ContractServer,
        context: ssl.SSLContext,
    ) -> None:
        super().__init__(address, handler)
        self.contract = contract
        self.context = context

    def finish_request(self, request: Any, client_address: Any) -> None:
        # TLS is set up in the connection's own thread, so a silent client blocks nobody.
        try:
            request.settimeout(10)
            # Headers and body go out in two writes: without this, Nagle and delayed ACKs
            # add 40 ms to every answer.
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        super().finish_request(tls, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HttpServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        reply = self.server.contract.handle(
            method, self.path, raw, self.headers.get("Authorization")
        )
        if reply is None:
            self.close_connection = True
            return
        payload = json.dumps(reply.body).encode() if reply.body is not None else b""
        if reply.raw is not None:
            payload = reply.raw
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if payload:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@contextmanager
def contract_server(
    ca: trustme.CA, ca_path: Path, source: str, destination: str
) -> Iterator[ContractServer]:
    server = ContractServer(ca, ca_path, source, destination)
    server.start()
    try:
        yield server
    finally:
        server.stop()
