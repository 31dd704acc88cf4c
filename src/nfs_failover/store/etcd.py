"""The etcd store: the whole ``Store`` contract in one etcd cluster (3.4 or later), shared
by controllers and agents on many hosts.

Keys, all under the configured prefix (each name percent-quoted as one segment):

    desired/VOLUME                      the desired state (JSON, its generation inside)
    reports/VOLUME/AGENT/REPLICA        a vantage point's latest report
    journal/VOLUME/STAMP                one journal entry; its id is the key's create revision
    journal-last/VOLUME/KIND            the newest entry of that kind (for last_event)
    journal-steps/VOLUME/STEP/PHASE/STAMP   empty, counted by count_events
    workflows/VOLUME/STAMP              a workflow; its id is the key's create revision
    running/VOLUME                      the key of the volume's running workflow
    leases/NAME                         the lease's holder, attached to an etcd lease

Every compare-and-swap is one etcd transaction: ``set_desired`` compares the record's mod
revision after checking its generation, ``start_workflow`` creates ``running/VOLUME`` only
if absent in the same transaction as the workflow, taking the leader lease creates
``leases/NAME`` only if absent under a fresh etcd lease (Patroni's pattern), and its
renewal keeps that etcd lease alive and then checks that the key still names this holder
under it. Journal and workflow ids are etcd revisions: they increase, with gaps.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import Any
from urllib.parse import quote, unquote

from nfs_failover.config import EtcdSettings, HostPort
from nfs_failover.desired import VolumeDesired
from nfs_failover.pacing import Deadline
from nfs_failover.store.codec import desired_json, parse_desired
from nfs_failover.store.contract import (
    REPORT_TTL,
    Event,
    Report,
    Store,
    StoreError,
    UnreadableRecord,
    Workflow,
)
from nfs_failover.store.etcd_watch import DesiredWatch
from nfs_failover.store.gateway import NOT_FOUND, EtcdError, Gateway, b64, prefix_end, unb64

log = logging.getLogger(__name__)
_CAS_TRIES = 5  # a compare-and-swap lost to a writer of something else is tried again
# Reads per transaction when one call reads many keys: well under etcd's --max-txn-ops
# (128 by default), which refuses a larger transaction whole.
_READS_PER_TXN = 64

KV = dict[str, Any]


class EtcdStore(Store):
    """The store in an etcd cluster, reached through the members' JSON gateway."""

    def __init__(
        self,
        endpoints: Sequence[HostPort],
        *,
        settings: EtcdSettings | None = None,
        timeout: float = 5.0,
    ) -> None:
        settings = settings or EtcdSettings()
        self.prefix = settings.prefix
        self.timeout = timeout
        self.gateway = Gateway(endpoints, tls=settings.tls, timeout=timeout)
        self._leases: dict[str, tuple[int, str]] = {}  # name -> (etcd lease id, holder)
        self._workflow_keys: dict[int, str] = {}
        self._lock = threading.Lock()

    def __str__(self) -> str:
        return f"{self.gateway} (prefix {self.prefix})"

    def close(self) -> None:
        self.gateway.close()

    # -- the desired state ---------------------------------------------------------------

    def get_desired(self, volume: str) -> VolumeDesired | None:
        kv = self._get(self._key("desired", volume), self._deadline())
        return None if kv is None else parse_desired(volume, _value(kv))

    def all_desired(self) -> dict[str, VolumeDesired]:
        return self._all_desired()[0]

    def set_desired(self, desired: VolumeDesired, *, expected_generation: int | None) -> bool:
        key = self._key("desired", desired.volume)
        put = _put(key, desired_json(desired))
        deadline = self._deadline()
        if expected_generation is None:
            return bool(self._txn([_absent(key)], [put], deadline)["succeeded"])
        for _ in range(_CAS_TRIES):
            kv = self._get(key, deadline)
            if kv is None:
                return False
            try:
                stored = parse_desired(desired.volume, _value(kv))
            except StoreError:
                return False  # an unreadable record is never overwritten by a guess
            if stored.generation != expected_generation:
                return False
            if self._txn([_unchanged(key, kv)], [put], deadline)["succeeded"]:
                return True
        return False

    def watch_desired(self, stop: threading.Event) -> Iterator[dict[str, VolumeDesired]]:
        prefix = self.prefix + "desired/"
        return DesiredWatch(self.gateway, prefix, self._all_desired)(stop)

    def _all_desired(self) -> tuple[dict[str, VolumeDesired], int]:
        answer = self._range(self.prefix + "desired/", self._deadline(), whole=True)
        found = {}
        for kv in answer.get("kvs", ()):
            volume = self._name(kv, "desired/")
            try:
                found[volume] = parse_desired(volume, _value(kv))
            except StoreError as exc:
                log.error("%s", exc)
        return found, _revision(answer)

    # -- the vantage points' reports -----------------------------------------------------

    def put_report(self, report: Report) -> None:
        key = self._key("reports", report.volume, report.agent, report.replica)
        self._txn([], [_put(key, json.dumps(asdict(report)))], self._deadline())

    def reports(self, volume: str | None = None, *, now: float | None = None) -> list[Report]:
        oldest = (time.time() if now is None else now) - REPORT_TTL
        under = self._key("reports", volume) + "/" if volume else self.prefix + "reports/"
        found = []
        for kv in self._range(under, self._deadline(), whole=True).get("kvs", ()):
            try:
                report = Report(**json.loads(_value(kv)))
            except (ValueError, TypeError) as exc:
                log.error("%s: unreadable report (%s)", unb64(kv["key"]), exc)
                continue
            if report.at >= oldest:
                found.append(report)
        return found

    # -- the journal ---------------------------------------------------------------------

    def append(self, event: Event) -> int:
        stamp = _stamp()
        text = json.dumps(
            {
                "volume": event.volume,
                "kind": event.kind,
                "detail": event.detail,
                "workflow": event.workflow,
                "step": event.step,
                "phase": event.phase,
                "at": event.at or time.time(),
            },
            default=str,
        )
        puts = [
            _put(self._key("journal", event.volume, stamp), text),
            _put(self._key("journal-last", event.volume, event.kind), text),
        ]
        if event.step:
            steps = self._key("journal-steps", event.volume, event.step, event.phase, stamp)
            puts.append(_put(steps, ""))
        return _revision(self._txn([], puts, self._deadline()))

    def events(
        self, volume: str | None = None, *, after: int = 0, limit: int = 10_000
    ) -> list[Event]:
        answer = self._range(
            self._journal(volume),
            self._deadline(),
            whole=True,
            limit=limit,
            sort_order="ASCEND",
            sort_target="CREATE",
            min_create_revision=after + 1,
        )
        return [self._event(kv) for kv in answer.get("kvs", ())]

    def recent_events(self, volume: str | None = None, *, limit: int = 200) -> list[Event]:
        return self._recent(volume, limit, self._deadline())

    def _recent(self, volume: str | None, limit: int, deadline: Deadline) -> list[Event]:
        """The newest ``limit`` entries (0: all), oldest first."""
        answer = self._range(
            self._journal(volume),
            deadline,
            whole=True,
            limit=limit,
            sort_order="DESCEND",
            sort_target="CREATE",
        )
        return [self._event(kv) for kv in reversed(answer.get("kvs", ()))]

    def last_event(
        self, volumes: Sequence[str], kinds: Sequence[str], *, with_key: str | None = None
    ) -> Event | None:
        if with_key is not None:
            return self._last_with_key(volumes, kinds, with_key)
        # One transaction of plain reads: every (volume, kind) at one revision.
        reads = [
            {"request_range": {"key": b64(self._key("journal-last", volume, kind))}}
            for volume in volumes
            for kind in kinds
        ]
        if not reads:
            return None
        answer = self.gateway.call(
            "/v3/kv/txn", {"success": reads}, write=False, deadline=self._deadline()
        )
        found = [
            kv
            for reply in answer.get("responses", ())
            for kv in reply.get("response_range", {}).get("kvs", ())
        ]
        if not found:
            return None
        newest = max(found, key=lambda kv: int(kv["mod_revision"]))
        return self._event(newest, id_from="mod_revision")

    def _last_with_key(
        self, volumes: Sequence[str], kinds: Sequence[str], with_key: str
    ) -> Event | None:
        """A scan of the volumes' journals, newest first: only asked after a workflow
        failed (its refusal), so its cost is paid rarely."""
        best: Event | None = None
        deadline = self._deadline()
        for volume in volumes:
            for event in reversed(self._recent(volume, 0, deadline)):
                if event.kind in kinds and event.detail.get(with_key) is not None:
                    if best is None or event.id > best.id:
                        best = event
                    break
        return best

    def last_events(self, volumes: Sequence[str], kinds: Sequence[str]) -> dict[str, Event]:
        of = {self._key("journal-last", v, k): v for v in volumes for k in kinds}
        newest: dict[str, KV] = {}
        for kv in self._read_keys(list(of), self._deadline()):
            volume = of[unb64(kv["key"])]
            known = newest.get(volume)
            if known is None or int(kv["mod_revision"]) > int(known["mod_revision"]):
                newest[volume] = kv
        return {v: self._event(kv, id_from="mod_revision") for v, kv in newest.items()}

    def count_events(self, volume: str, step: str, phase: str) -> int:
        under = self._key("journal-steps", volume, step, phase) + "/"
        answer = self._range(under, self._deadline(), whole=True, count_only=True)
        return int(answer.get("count", 0))

    def _journal(self, volume: str | None) -> str:
        return self._key("journal", volume) + "/" if volume else self.prefix + "journal/"

    def _event(self, kv: KV, *, id_from: str = "create_revision") -> Event:
        try:
            data = json.loads(_value(kv))
            return Event(
                volume=str(data["volume"]),
                kind=str(data["kind"]),
                detail=dict(data["detail"]),
                workflow=data["workflow"],
                step=str(data["step"]),
                phase=str(data["phase"]),
                at=float(data["at"]),
                id=int(kv[id_from]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise UnreadableRecord(
                f"{unb64(kv['key'])}: unreadable journal entry ({exc})"
            ) from None

    # -- workflows -----------------------------------------------------------------------

    def start_workflow(self, volume: str, kind: str, data: dict[str, object]) -> Workflow:
        now = time.time()
        key = self._key("workflows", volume, _stamp())
        running = self._key("running", volume)
        record = {
            "volume": volume,
            "kind": kind,
            "status": "running",
            "step": 0,
            "data": data,
            "started": now,
            "updated": now,
        }
        answer = self._txn(
            [_absent(running)],
            [_put(key, json.dumps(record, default=str)), _put(running, key)],
            self._deadline(),
        )
        if not answer["succeeded"]:
            raise StoreError(f"{self}: volume {volume} already runs a workflow")
        workflow_id = _revision(answer)
        self._remember(workflow_id, key)
        return Workflow(workflow_id, volume, kind, "running", 0, data, now, now)

    def running_workflow(self, volume: str) -> Workflow | None:
        deadline = self._deadline()
        pointer = self._get(self._key("running", volume), deadline)
        if pointer is None:
            return None
        kv = self._get(_value(pointer), deadline)
        return None if kv is None else self._workflow(kv)

    def running_workflows(self) -> dict[str, Workflow]:
        deadline = self._deadline()
        pointers = self._range(self.prefix + "running/", deadline, whole=True).get("kvs", ())
        found = {}
        for kv in self._read_keys([_value(p) for p in pointers], deadline):
            workflow = self._workflow(kv)
            if workflow.status == "running":
                found[workflow.volume] = workflow
        return found

    def last_workflow(self, volume: str) -> Workflow | None:
        deadline = self._deadline()
        newest = self._range(
            self._key("workflows", volume) + "/",
            deadline,
            whole=True,
            limit=1,
            sort_order="DESCEND",
            sort_target="CREATE",
            keys_only=True,
        ).get("kvs", ())
        if not newest:
            return None
        kv = self._get(unb64(newest[0]["key"]), deadline)
        return None if kv is None else self._workflow(kv)

    def advance_workflow(self, workflow: int, step: int, data: dict[str, object]) -> None:
        self._update_workflow(workflow, lambda record: {**record, "step": step, "data": data})

    def finish_workflow(self, workflow: int, status: str) -> None:
        self._update_workflow(
            workflow,
            lambda record: {**record, "status": status} if record["status"] == "running" else None,
            finishing=True,
        )

    def _update_workflow(self, workflow: int, change: Any, *, finishing: bool = False) -> None:
        """Read, change and compare-and-swap the workflow's record (``change`` returns None
        when nothing is to be done); finishing also frees the volume's running key."""
        deadline = self._deadline()
        key = self._workflow_key(workflow, deadline)
        for _ in range(_CAS_TRIES):
            kv = self._get(key, deadline)
            if kv is None:
                raise StoreError(f"{self}: workflow {workflow} not found")
            record = json.loads(_value(kv))
            changed = change(record)
            if changed is None:
                return
            changed["updated"] = time.time()
            ops = [_put(key, json.dumps(changed, default=str))]
            compare = [_unchanged(key, kv)]
            if finishing:
                running = self._key("running", record["volume"])
                ops.append({"request_delete_range": {"key": b64(running)}})
                compare.append(_holds(running, key))
            if self._txn(compare, ops, deadline)["succeeded"]:
                return
            if finishing and self._get(key, deadline) == kv:
                finishing = False  # the running key names another: leave it alone
        raise StoreError(f"{self}: workflow {workflow} kept changing; not updated")

    def _workflow_key(self, workflow: int, deadline: Deadline) -> str:
        with self._lock:
            known = self._workflow_keys.get(workflow)
        if known is not None:
            return known
        found = self._range(
            self.prefix + "workflows/",
            deadline,
            whole=True,
            keys_only=True,
            min_create_revision=workflow,
            max_create_revision=workflow,
        ).get("kvs", ())
        if not found:
            raise StoreError(f"{self}: workflow {workflow} not found")
        key = unb64(found[0]["key"])
        self._remember(workflow, key)
        return key

    def _remember(self, workflow: int, key: str) -> None:
        with self._lock:
            self._workflow_keys[workflow] = key

    def _workflow(self, kv: KV) -> Workflow:
        try:
            data = json.loads(_value(kv))
            workflow = Workflow(
                id=int(kv["create_revision"]),
                volume=str(data["volume"]),
                kind=str(data["kind"]),
                status=str(data["status"]),
                step=int(data["step"]),
                data=dict(data["data"]),
                started=float(data["started"]),
                updated=float(data["updated"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise UnreadableRecord(f"{unb64(kv['key'])}: unreadable workflow ({exc})") from None
        self._remember(workflow.id, unb64(kv["key"]))
        return workflow

    # -- the leader lease ----------------------------------------------------------------

    def acquire_lease(
        self, name: str, holder: str, ttl: float, *, timeout: float | None = None
    ) -> bool:
        """Renew: keep the etcd lease alive, then check (a transaction's compare) that the
        key still names ``holder`` under that lease; the time counts from when the
        keep-alive was sent. Take: a fresh etcd lease, and a transaction that creates the
        key under it only if the key is absent (or still names ``holder`` under a lease
        this process forgot). All of it within ``timeout`` when that is shorter."""
        key = self._key("leases", name)
        deadline = Deadline(self.timeout if timeout is None else min(timeout, self.timeout))
        with self._lock:
            known = self._leases.get(name)
        held = known[0] if known is not None and known[1] == holder else None
        if held is not None and self._renew(key, held, holder, deadline):
            return True
        self._forget(name)
        kv = self._get(key, deadline)
        if kv is not None and _value(kv) != holder:
            return False
        lease = self._grant(ttl, deadline)
        guard = _absent(key) if kv is None else _unchanged(key, kv)
        try:
            taken = self._txn([guard], [_put(key, holder, lease=lease)], deadline)["succeeded"]
        except StoreError:
            self._revoke(lease, deadline)
            raise
        if not taken:
            self._revoke(lease, deadline)
            return False
        with self._lock:
            self._leases[name] = (lease, holder)
        return True

    def release_lease(self, name: str, holder: str) -> None:
        key = self._key("leases", name)
        deadline = self._deadline()
        delete = {"request_delete_range": {"key": b64(key)}}
        self._txn([_holds(key, holder)], [delete], deadline)
        with self._lock:
            known = self._leases.get(name)
        if known is not None and known[1] == holder:
            self._revoke(known[0], deadline)
            self._forget(name)

    def lease_holder(self, name: str) -> str | None:
        kv = self._get(self._key("leases", name), self._deadline())
        return None if kv is None else _value(kv)

    def _renew(self, key: str, lease: int, holder: str, deadline: Deadline) -> bool:
        answer = self._call("/v3/lease/keepalive", {"ID": str(lease)}, deadline)
        ttl = int(answer.get("result", answer).get("TTL", 0))
        if ttl <= 0:  # expired or revoked: etcd answers a TTL of 0 (left out of the JSON)
            return False
        under = {"key": b64(key), "target": "LEASE", "result": "EQUAL", "lease": str(lease)}
        return bool(self._txn([_holds(key, holder), under], [], deadline)["succeeded"])

    def _grant(self, ttl: float, deadline: Deadline) -> int:
        answer = self._call("/v3/lease/grant", {"TTL": math.ceil(ttl)}, deadline)
        return int(answer["ID"])

    def _revoke(self, lease: int, deadline: Deadline) -> None:
        """Best effort: a lease nobody revokes expires on its own."""
        try:
            self._call("/v3/lease/revoke", {"ID": str(lease)}, deadline)
        except EtcdError as exc:
            if exc.code != NOT_FOUND:
                log.warning("%s: lease %x not revoked: %s", self, lease, exc)
        except StoreError as exc:
            log.warning("%s: lease %x not revoked: %s", self, lease, exc)

    def _forget(self, name: str) -> None:
        with self._lock:
            self._leases.pop(name, None)

    # -- calls ---------------------------------------------------------------------------

    def _key(self, section: str, *names: str | None) -> str:
        return self.prefix + section + "/" + "/".join(quote(str(n), safe="") for n in names)

    def _name(self, kv: KV, section: str) -> str:
        return unquote(unb64(kv["key"]).removeprefix(self.prefix + section))

    # Each public operation makes one Deadline and hands it to every call it makes, so
    # that one made of several calls (read, then compare-and-swap) still ends in time.

    def _deadline(self) -> Deadline:
        return Deadline(self.timeout)

    def _get(self, key: str, deadline: Deadline) -> KV | None:
        kvs = self._range(key, deadline).get("kvs", ())
        return kvs[0] if kvs else None

    def _range(
        self, key: str, deadline: Deadline, *, whole: bool = False, **options: object
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"key": b64(key), **options}
        if whole:
            body["range_end"] = prefix_end(key)
        return self.gateway.call("/v3/kv/range", body, write=False, deadline=deadline)

    def _read_keys(self, keys: Sequence[str], deadline: Deadline) -> list[KV]:
        """The records of ``keys`` that exist, in transactions of plain reads."""
        found = []
        for first in range(0, len(keys), _READS_PER_TXN):
            reads = [
                {"request_range": {"key": b64(key)}} for key in keys[first : first + _READS_PER_TXN]
            ]
            answer = self.gateway.call(
                "/v3/kv/txn", {"success": reads}, write=False, deadline=deadline
            )
            found += [
                kv
                for reply in answer.get("responses", ())
                for kv in reply.get("response_range", {}).get("kvs", ())
            ]
        return found

    def _txn(self, compare: list[KV], success: list[KV], deadline: Deadline) -> dict[str, Any]:
        answer = self.gateway.call(
            "/v3/kv/txn", {"compare": compare, "success": success}, write=True, deadline=deadline
        )
        answer["succeeded"] = bool(answer.get("succeeded", False))  # false is left out
        return answer

    def _call(self, path: str, body: dict[str, Any], deadline: Deadline) -> dict[str, Any]:
        return self.gateway.call(path, body, write=True, deadline=deadline)


def _value(kv: KV) -> str:
    return unb64(kv.get("value", ""))


def _revision(answer: dict[str, Any]) -> int:
    return int(answer.get("header", {}).get("revision", 0))


def _stamp() -> str:
    """A key segment that sorts by time and is unique without coordination."""
    return f"{time.time_ns():020d}-{secrets.token_hex(4)}"


def _put(key: str, value: str, *, lease: int | None = None) -> KV:
    put: KV = {"key": b64(key), "value": b64(value)}
    if lease is not None:
        put["lease"] = str(lease)  # int64 as JSON text: no float rounding on the way
    return {"request_put": put}


def _absent(key: str) -> KV:
    return {"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": 0}


def _unchanged(key: str, kv: KV) -> KV:
    return {
        "key": b64(key),
        "target": "MOD",
        "result": "EQUAL",
        "mod_revision": int(kv["mod_revision"]),
    }


def _holds(key: str, value: str) -> KV:
    return {"key": b64(key), "target": "VALUE", "result": "EQUAL", "value": b64(value)}
