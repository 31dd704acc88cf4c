"""The HTTP API of a running controller: status, history, health, metrics, and actions.

One module per job: ``app`` builds the FastAPI app over a ``ControllerHandle``
(``build_app``); ``guards`` answers before routing (the bearer token, the body limit);
``routes`` holds the reads and the actions; ``metrics`` the Prometheus collector;
``replies`` the error and health replies; ``token`` reads the token file
(``read_token``); ``server`` runs it all inside the controller's event loop (``serve``).

Reads (GET) are open: status, history, health and metrics say what the controller sees
and does, which is no secret, and monitoring and liveness probes must reach them without
a credential. Actions (every method but GET, HEAD and OPTIONS) change which replica
clients mount, so each needs ``Authorization: Bearer <token>``; a request without it is
answered 401 before its body is read and before the handle is called. A bearer header is
never sent by a browser on its own, so a web page cannot forge an action (no CSRF). The
token is compared in constant time and never logged or echoed. The server listens on
loopback only unless told otherwise: it speaks plain HTTP, and a token sent over the
network in clear text would be a token given away.

Replies are the controller's snapshots (``controller.snapshot``), declared as each
route's response model: a reply that breaks its model is a 500, never sent, and
``GET /openapi.json`` describes every reply field by field. FastAPI's ``/docs`` and
``/redoc`` pages are disabled: they load their scripts from a CDN into the browser.
Errors are JSON objects ``{"error": "one line"}``.
"""

from __future__ import annotations

from nfs_failover.api.app import build_app
from nfs_failover.api.guards import MAX_BODY_BYTES, BodyLimit, TokenGate
from nfs_failover.api.metrics import PROBE_LATENCY_BUCKETS, HandleCollector
from nfs_failover.api.replies import ErrorReply, HealthReply
from nfs_failover.api.routes import DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT, ActionBody
from nfs_failover.api.server import bind_control_socket, serve
from nfs_failover.api.token import read_token
from nfs_failover.controller.snapshot import VolumeMetrics

__all__ = [
    "DEFAULT_HISTORY_LIMIT",
    "MAX_BODY_BYTES",
    "MAX_HISTORY_LIMIT",
    "PROBE_LATENCY_BUCKETS",
    "ActionBody",
    "BodyLimit",
    "ErrorReply",
    "HandleCollector",
    "HealthReply",
    "TokenGate",
    "VolumeMetrics",
    "bind_control_socket",
    "build_app",
    "read_token",
    "serve",
]
