"""NetApp ONTAP SnapMirror as a ``Provider``, through the ONTAP REST API (netapp-ontap).

Maps the common operations onto one SnapMirror relationship: status reads it; break and
resync PATCH its ``state`` (``broken_off``, ``snapmirrored``); a reverse resync PATCHes it
with ``source.path`` and ``destination.path`` swapped and ``state: snapmirrored``, which
is how the ONTAP REST documentation reverses a relationship (no new relationship is
created); transfer_now POSTs ``/transfers``. ONTAP answers with a job and only starts the
change, so each operation follows the job, then polls the relationship until it shows
the end state, all within the operation's deadline. Once ONTAP has accepted a change, a
read that fails does not fail the operation: the relationship's state decides. GETs are
asked again after a transient failure, PATCH and POST never. Threads, timeouts,
credentials and error translation live in ``client``; reading ONTAP's records into the
project's types in ``records``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import TypeVar

from netapp_ontap.host_connection import HostConnection

from nfs_failover.config import OntapReplication, Volume
from nfs_failover.errors import PreconditionError, ProviderError, ProviderTimeout
from nfs_failover.pacing import Deadline, Pacer
from nfs_failover.replication.base import (
    BeforeFence,
    Divergence,
    FenceResult,
    MirrorState,
    OperationResult,
    Progress,
    Provider,
    RelationshipStatus,
    ReplicationStatus,
    Saved,
)
from nfs_failover.replication.nfs_divergence import divergence_over_nfs
from nfs_failover.replication.ontap.client import (
    OntapClient,
    OntapError,
    OntapTimeout,
    Request,
    connect,
    read_credentials,
)
from nfs_failover.replication.ontap.records import (
    NEVER,
    OntapJob,
    OntapRecord,
    RwRule,
    export_policy,
    parse_lag_time,
    rw_rules,
)

__all__ = ["OntapProvider"]

T = TypeVar("T")

# Of what is left of the deadline when ONTAP accepts a change, the share its job may
# take to confirm it: the rest is kept for the relationship, which has the last word.
_JOB_SHARE = 0.75
# While a change is confirmed, the share of what is left one relationship read may take:
# a read that hangs then leaves time to read the relationship again.
_READ_SHARE = 0.5


class OntapProvider(Provider):
    """One SnapMirror relationship, named by UUID or by destination path ``svm:volume``.

    - Which replica is which: the record's source path is the source now, whatever the
      configured order; what is learned is which ONTAP path belongs to which replica.
      With a destination path configured, that path is ``replicas[1]``'s (a
      relationship found by it as *source* path is reversed). With a UUID, each path's
      volume name is looked for in the replicas' export paths (``_paths_by_export``).
      After a reverse resync, ``status().source`` names the old destination, in this
      process and in every new one.
    - The relationship is looked up on ``cluster`` only. ONTAP keeps a relationship on
      its destination cluster, so across two clusters a reversed relationship is out of
      reach unless ``cluster`` manages both (see docs/providers-ontap.md).
    - ``overwritten`` is always empty: ONTAP does not list the files a resync or reverse
      resync overwrites; ``divergence`` walks both replicas over NFS beforehand.
    - Repeating a reverse resync is recognised (``changed=False``) from the direction this
      process saw at the break; after a restart it raises ``PreconditionError`` instead.
    - Without ``connection``, one is built from the settings and credentials and closed by
      ``close()``. A connection passed in is left open, but its session gets the
      provider's adapter (deadline timeouts, no retries) for the cluster's origin.
    - A GET that meets HTTP 500/502/503/504 or a failed connection is asked again, paced
      (``Pacer``) and honouring Retry-After, within the deadline; a PATCH or POST is sent
      once (``_run``). Once ONTAP has accepted a change, failed reads are read through
      and the relationship's state decides (``_confirm``).
    """

    name = "ontap"

    def __init__(
        self,
        volume: Volume,
        *,
        connection: HostConnection | None = None,
        poll_interval: float = 1.0,
    ) -> None:
        settings = volume.replication
        if not isinstance(settings, OntapReplication):
            raise TypeError(f"volume {volume.name} does not use the ontap provider")
        self.volume = volume
        self._settings = settings
        self._poll_interval = poll_interval
        owned = connection is None
        if connection is None:
            connection = connect(settings, read_credentials(settings))
        self._client = OntapClient(connection, owned=owned)
        by_path = ":" in settings.relationship
        self._uuid: str | None = None if by_path else settings.relationship
        self._paths: tuple[str, str] | None = None  # ONTAP paths of replicas[0], [1]
        self._broken_from: str | None = None  # the source path when last seen broken
        self._resyncing = False

    # -- the contract ------------------------------------------------------------------

    async def status(self, *, timeout: float) -> ReplicationStatus:
        return self._status(await self._read(Deadline(timeout)))

    async def transfer_now(
        self, *, timeout: float, progress: Progress | None = None
    ) -> OperationResult:
        """POST a transfer and wait until it has ended (mirrored relationships only).

        A transfer already running is waited for first, then a new one is started, so the
        destination holds everything written before this call.
        """
        deadline = Deadline(timeout)
        record = await self._read(deadline)
        if record.mirror_state is not MirrorState.MIRRORED:
            raise PreconditionError(
                f"volume {self.volume.name}: a transfer needs a mirrored relationship,"
                f" it is {record.state or 'unknown'}"
            )
        if record.relationship_status is not RelationshipStatus.IDLE:
            record = await self._wait(deadline, progress, "the running transfer to end", _idle)
        watch = _TransferWatch(record, "transfer")
        job = await self._run(self._client.start_transfer(record.uuid), deadline)
        goal = _Goal("transfer", "the transfer to end", watch.ended, watch.observe)
        final = await self._confirm(job, goal, deadline, progress)
        return self._result("transfer", final, True, bytes_transferred=final.transfer_bytes)

    async def break_(
        self, *, force: bool = False, timeout: float, progress: Progress | None = None
    ) -> OperationResult:
        """PATCH ``state: broken_off`` (with the query ``force=true`` when forced).

        Without force, a running transfer is waited for within the deadline; if it is
        still running then, ``ProviderTimeout`` is raised and nothing is changed.
        """
        deadline = Deadline(timeout)
        record = await self._read(deadline)
        if record.relationship_status is RelationshipStatus.TRANSFERRING and not force:
            self._refuse_break(record)
            goal = "the running transfer to end before the break"
            try:
                record = await self._wait(deadline, progress, goal, _idle)
            except ProviderTimeout as exc:
                raise ProviderTimeout(
                    f"{exc}; the break was not started, nothing was changed (a forced break"
                    " aborts the transfer)",
                    code="timeout",
                ) from exc
        self._refuse_break(record)
        if record.mirror_state is MirrorState.BROKEN:
            return self._result("break", record, False)
        _say(progress, f"breaking: {self._status(record).destination} becomes writable")
        broken = _Goal("break", "broken_off", _broken)
        final = await self._change(
            record, {"state": "broken_off"}, broken, deadline, progress, force
        )
        return self._result("break", final, True)

    async def resync(self, *, timeout: float, progress: Progress | None = None) -> OperationResult:
        """PATCH ``state: snapmirrored``: the current source overwrites the destination."""
        return await self._resync(reverse=False, timeout=timeout, progress=progress)

    async def reverse_resync(
        self, *, timeout: float, progress: Progress | None = None
    ) -> OperationResult:
        """PATCH the same relationship with ``source.path`` and ``destination.path`` swapped
        and ``state: snapmirrored``, as ONTAP documents a reversal; the old source becomes
        the destination and loses its changes since the last common snapshot."""
        return await self._resync(reverse=True, timeout=timeout, progress=progress)

    async def divergence(self, *, timeout: float) -> Divergence:
        """ONTAP does not list the files that changed on one side only; it gives the lag
        of the last transfer. Both replicas are walked over NFS with the project's own
        client, and files changed since that point are attributed to their side
        (``nfs_divergence``)."""
        deadline = Deadline(timeout)
        status = self._status(await self._read(deadline))
        if status.lag is None:
            raise PreconditionError(
                f"ONTAP reports no lag_time for {status.destination}, so no common point to "
                "compare the replicas with"
            )
        exports = {replica.name: replica.export for replica in self.volume.replicas}
        return await divergence_over_nfs(
            exports[status.source],
            exports[status.destination],
            datetime.now(UTC) - status.lag,
            timeout=deadline.left(),
        )

    async def fence(
        self, replica: str, *, timeout: float, before_change: BeforeFence | None = None
    ) -> FenceResult:
        """Every rule of the export policy of the replica's volume (its
        ``nas.export_policy``) gets ``rw_rule: ["never"]``, one PATCH per rule that grants
        writes; ``saved`` is the policy and each rule's ``rw_rule`` before. A policy other
        volumes use too is refused (``shared_policy``): fencing it would fence them."""
        deadline = Deadline(timeout)
        path = await self._path_of(replica, deadline)
        policy, name = await self._export_policy(path, deadline)
        rules = await self._rules(policy, deadline)
        saved: Saved = {"volume": path, "policy": {"id": policy, "name": name}, "rules": rules}
        open_ = [rule for rule in rules if rule["rw_rule"] != NEVER]
        if not open_:
            detail = f"every rule of export policy {name} of {path} is rw_rule never"
            return FenceResult(replica, changed=False, saved=saved, detail=detail)
        if before_change is not None:
            await before_change(saved)
        for rule in open_:
            await self._change_rule(policy, rule["index"], NEVER, deadline)
        if any(rule["rw_rule"] != NEVER for rule in await self._rules(policy, deadline)):
            raise ProviderError(
                f"volume {self.volume.name}: ONTAP took the changes of export policy {name},"
                " but a rule of it still grants writes",
                code="not_fenced",
            )
        detail = f"{len(open_)} rules of export policy {name} of {path} set to rw_rule never"
        return FenceResult(replica, changed=True, saved=saved, detail=detail)

    async def unfence(self, replica: str, saved: Saved, *, timeout: float) -> OperationResult:
        """Each rule of the saved export policy gets its saved ``rw_rule`` back; rules that
        already have it are not sent."""
        deadline = Deadline(timeout)
        self._index(replica)
        named, rules = saved.get("policy"), saved.get("rules")
        policy = named.get("id") if isinstance(named, dict) else None
        try:
            wanted = rw_rules(rules) if isinstance(rules, list) else []
        except ValueError:
            wanted = []
        if not isinstance(policy, int) or not wanted:
            raise ProviderError(
                f"cannot unfence {replica}: the saved state names no export policy and rules"
                f" ({str(saved)[:200]})",
                code="bad_saved",
            )
        now = {rule["index"]: rule["rw_rule"] for rule in await self._rules(policy, deadline)}
        changed = False
        for rule in wanted:
            if now.get(rule["index"]) != rule["rw_rule"]:
                await self._change_rule(policy, rule["index"], rule["rw_rule"], deadline)
                changed = True
        return self._result("unfence", await self._read(deadline), changed)

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)

    # -- export policies (the storage fence) --------------------------------------------

    def _index(self, replica: str) -> int:
        names = [r.name for r in self.volume.replicas]
        if replica not in names:
            raise ProviderError(
                f"volume {self.volume.name} has no replica {replica} (it has {', '.join(names)})",
                code="config",
            )
        return names.index(replica)

    async def _path_of(self, replica: str, deadline: Deadline) -> str:
        """The ONTAP path ``svm:volume`` of a replica, learned from the relationship."""
        index = self._index(replica)
        if self._paths is None:
            await self._read(deadline)
        if self._paths is None:
            raise ProviderError(
                f"ONTAP did not report the paths of the relationship of {self.volume.name}",
                code="bad_reply",
            )
        return self._paths[index]

    async def _export_policy(self, path: str, deadline: Deadline) -> tuple[int, str]:
        svm, _, name = path.partition(":")
        found = await self._run(self._client.volumes({"name": name, "svm.name": svm}), deadline)
        policy = export_policy(found[0]) if len(found) == 1 else None
        if policy is None:
            raise ProviderError(
                f"ONTAP at {self._client.origin} shows {len(found)} volumes {path}"
                + ("" if len(found) != 1 else ", without an export policy"),
                code="not_found",
            )
        users = await self._run(
            self._client.volumes({"nas.export_policy.id": str(policy[0])}), deadline
        )
        others = sorted(
            f"{_part(user, 'svm')}:{user.get('name')}"
            for user in users
            if (user.get("name"), _part(user, "svm")) != (name, svm)
        )
        if others:
            raise ProviderError(
                f"export policy {policy[1]} of {path} is used by {', '.join(others)} too:"
                f" fencing it would make them read-only; give {path} an export policy of its own",
                code="shared_policy",
            )
        return policy

    async def _rules(self, policy: int, deadline: Deadline) -> list[RwRule]:
        records = await self._run(self._client.export_rules(policy), deadline)
        try:
            return rw_rules(records)
        except ValueError as exc:
            raise ProviderError(
                f"ONTAP gave an unusable export rule: {exc}", code="bad_reply"
            ) from None

    async def _change_rule(
        self, policy: int, index: int, rw_rule: list[str], deadline: Deadline
    ) -> None:
        """PATCH one rule's rw_rule (sent once); a job it starts is followed."""
        job = await self._run(
            self._client.change_export_rule(policy, index, {"rw_rule": rw_rule}), deadline
        )
        note = await self._follow_job(job, deadline, None)
        if note is not None:
            raise ProviderTimeout(
                f"volume {self.volume.name}: rule {index} of export policy {policy} is not"
                f" confirmed changed: {note}",
                code="timeout",
            )

    # -- operations --------------------------------------------------------------------

    async def _resync(
        self, *, reverse: bool, timeout: float, progress: Progress | None
    ) -> OperationResult:
        operation = "reverse resync" if reverse else "resync"
        deadline = Deadline(timeout)
        record = await self._read(deadline)
        if record.mirror_state is MirrorState.MIRRORED and self._done(record, reverse=reverse):
            return self._result(operation, record, False)
        if record.mirror_state is not MirrorState.BROKEN:
            raise PreconditionError(
                f"volume {self.volume.name}: {operation} needs a broken relationship,"
                f" it is {record.state or 'unknown'}"
            )
        if record.source_path is None or record.destination_path is None:
            raise ProviderError(
                f"ONTAP did not report the paths of relationship {record.uuid}", code="bad_reply"
            )
        changes: dict[str, object] = {"state": "snapmirrored"}
        source = record.source_path
        if reverse:
            source = record.destination_path
            changes["source"] = {"path": record.destination_path}
            changes["destination"] = {"path": record.source_path}
        status = self._status(record)
        kept, lost = (
            (status.destination, status.source) if reverse else (status.source, status.destination)
        )
        _say(progress, f"{operation}: {lost} is overwritten from {kept}")
        watch = _TransferWatch(record, operation)

        def mirrored(r: OntapRecord) -> bool:
            return _idle(r) and r.mirror_state is MirrorState.MIRRORED and r.source_path == source

        # While ONTAP resyncs it may still say broken_off: that is not a new break.
        self._broken_from, self._resyncing = record.source_path, True
        try:
            goal = _Goal(operation, "snapmirrored", mirrored, watch.observe)
            final = await self._change(record, changes, goal, deadline, progress)
        finally:
            self._resyncing = False
        moved = final.transfer_bytes if watch.new(final) else None
        return self._result(operation, final, True, bytes_transferred=moved)

    def _done(self, record: OntapRecord, *, reverse: bool) -> bool:
        """Whether a mirrored relationship already is what the (reverse) resync makes."""
        if reverse:
            return self._broken_from is not None and self._broken_from != record.source_path
        return self._broken_from in (None, record.source_path)

    def _refuse_break(self, record: OntapRecord) -> None:
        if record.mirror_state is MirrorState.UNINITIALIZED:
            raise PreconditionError(
                f"volume {self.volume.name}: cannot break an uninitialized relationship"
            )

    async def _change(  # noqa: PLR0917 - the change, its goal, and how to run it
        self,
        record: OntapRecord,
        changes: Mapping[str, object],
        goal: _Goal,
        deadline: Deadline,
        progress: Progress | None,
        force: bool = False,
    ) -> OntapRecord:
        """PATCH the relationship (sent once), then confirm the change (``_confirm``)."""
        request = self._client.change_relationship(record.uuid, changes, force=force)
        return await self._confirm(await self._run(request, deadline), goal, deadline, progress)

    async def _confirm(
        self, job: str | None, goal: _Goal, deadline: Deadline, progress: Progress | None
    ) -> OntapRecord:
        """Follow the job ONTAP started, then the relationship until ``goal`` is reached.

        Once ONTAP has accepted a change, a read that fails (HTTP 500 after its retries,
        403 for a role without /api/cluster/jobs, no answer) says nothing about the change,
        which may well be done. So the job may use only part of the deadline, the
        relationship is read again after a failed read, and its state decides. Only ONTAP
        reporting a failure (a failed job, a failed transfer) fails the operation; at the
        deadline the error says what is known and that the change may still complete.
        """
        note = await self._follow_job(job, deadline.share(_JOB_SHARE), progress)
        try:
            final = await self._wait(
                deadline, progress, goal.text, goal.done, goal.check, confirming=True
            )
        except _NotReached as exc:
            story = "; ".join(filter(None, (note, f"{exc.last} (waiting for {goal.text})")))
            raise ProviderTimeout(
                f"volume {self.volume.name}: the {goal.operation} is not confirmed within the"
                f" deadline: {story}. ONTAP accepted it, and it may still complete on the"
                " cluster: read the status before acting again",
                code="timeout",
            ) from exc
        if note is not None:
            done = f"the relationship reads {final.describe()}: the {goal.operation} is done"
            _say(progress, f"{note}; {done}")
        return final

    async def _follow_job(
        self, job: str | None, deadline: Deadline, progress: Progress | None
    ) -> str | None:
        """Follow a job to its end within ``deadline`` (a share of the operation's).

        None when the job succeeded, or ONTAP no longer knows it (it forgets finished jobs;
        the relationship tells the rest). A failed job raises with ONTAP's message and
        code. Otherwise, why the job did not confirm the change: it could not be read, or
        it was still running; then the relationship decides.
        """
        if job is None:
            return None
        request, said = self._client.job(job), ""
        pacer = Pacer.every(self._poll_interval, deadline)
        while True:
            try:
                data = await self._run(request, deadline)
            except ProviderError as exc:
                return f"ONTAP job {job} could not be read ({_why(exc)})"
            if data is None:
                return None
            reading = OntapJob.parse(data)
            state, message, code = reading.state, reading.message, reading.code
            if state == "success":
                return None
            if state in ("failure", "cancelled", "expired"):
                raise ProviderError(
                    f"ONTAP job {job} ended in {state}: {message or 'no message'}",
                    code=code,
                    provider_message=message,
                )
            said = _say(progress, f"waiting for ONTAP job {job} ({state}: {message})", said)
            if not await pacer.pause() or deadline.passed():
                return f"ONTAP job {job} was still {state} ({message or 'no message'})"

    async def _wait(
        self,
        deadline: Deadline,
        progress: Progress | None,
        goal: str,
        done: Callable[[OntapRecord], bool],
        check: Callable[[OntapRecord], None] | None = None,
        *,
        confirming: bool = False,
    ) -> OntapRecord:
        """Poll the relationship until ``done``; ``check`` may raise on a failed transfer.

        While ``confirming`` a change ONTAP accepted, a failed read is not the end: each
        read may take only a share of what is left, and the relationship is read again
        until the deadline. Otherwise a read's error (after its own retries) is raised.
        At the deadline, the last reading is reported: a read that failed after it (the
        last ones get little time) says nothing about the state.
        """
        reading, failure, said = "", "", ""
        pacer = Pacer.every(self._poll_interval, deadline)
        while True:
            read_by = deadline.share(_READ_SHARE) if confirming else deadline
            try:
                record = await self._read(read_by)
            except ProviderError as exc:
                if not confirming:
                    raise
                failure = f"the relationship could not be read ({_why(exc)})"
            else:
                if check is not None:
                    check(record)
                if done(record):
                    return record
                reading = f"the relationship reads {record.describe()}"
                said = _say(progress, f"waiting for {goal} ({record.describe()})", said)
            if not await pacer.pause() or deadline.passed():
                last = reading or failure or "the relationship was not read"
                raise _NotReached(self.volume.name, goal, last)

    # -- reading -----------------------------------------------------------------------

    async def _read(self, deadline: Deadline) -> OntapRecord:
        """The relationship now: by UUID, else (or when the UUID is gone) by path."""
        if self._uuid is not None:
            found = await self._query({"uuid": self._uuid}, deadline)
            if found is not None:
                return self._learn(found)
            if self._paths is None:
                raise ProviderError(
                    f"no SnapMirror relationship {self._uuid} on {self._client.origin}",
                    code="not_found",
                )
        for key, path in self._lookups():
            found = await self._query({key: path}, deadline)
            if found is not None:
                self._uuid = found.uuid
                return self._learn(found)
        raise ProviderError(
            f"no SnapMirror relationship with destination path {self._settings.relationship}"
            f" on {self._client.origin}",
            code="not_found",
        )

    def _lookups(self) -> list[tuple[str, str]]:
        if self._paths is not None:
            return [("destination.path", self._paths[1]), ("destination.path", self._paths[0])]
        path = self._settings.relationship
        return [("destination.path", path), ("source.path", path)] if ":" in path else []

    async def _query(self, query: dict[str, str], deadline: Deadline) -> OntapRecord | None:
        records = await self._run(self._client.relationships(query), deadline)
        if len(records) > 1:
            raise ProviderError(
                f"{len(records)} SnapMirror relationships match {query} on"
                f" {self._client.origin}; expected one",
                code="ambiguous",
            )
        if not records:
            return None
        try:
            return OntapRecord.parse(records[0])
        except ValueError as exc:
            raise ProviderError(f"ONTAP gave an unusable record: {exc}", code="bad_reply") from None

    def _learn(self, record: OntapRecord) -> OntapRecord:
        """Fix which ONTAP path is which replica (once) and note the direction at a break."""
        source, destination = record.source_path, record.destination_path
        if self._paths is None and source is not None and destination is not None:
            self._paths = self._replica_paths(record.uuid, source, destination)
        if record.mirror_state is MirrorState.BROKEN and not self._resyncing:
            self._broken_from = source
        return record

    def _replica_paths(self, uuid: str, source: str, destination: str) -> tuple[str, str]:
        """The ONTAP paths of ``replicas[0]`` and ``[1]``, from a record's two paths.

        Never from the order the record shows them in, which a reverse resync swaps: a
        configured destination path is ``replicas[1]``'s wherever it now stands; with a
        UUID, the exports tell (``_paths_by_export``).
        """
        configured = self._settings.relationship
        if ":" not in configured:
            return _paths_by_export(self.volume, uuid, source, destination)
        return (destination, source) if source == configured else (source, destination)

    async def _run(self, request: Request[T], deadline: Deadline) -> T:
        """One ONTAP request, asked again while that is safe and time is left.

        A GET that met a transient failure (HTTP 500/502/503/504, a failed connection) is
        sent again after a paced pause, and after the pause the server asked for
        (Retry-After) when that fits in the deadline; never past it. A PATCH or POST is
        sent once: ONTAP may have acted on one whose reply was lost, and sending it again
        could start a second job.
        """
        pacer = Pacer(deadline)
        while True:
            try:
                return await self._send(request, deadline)
            except OntapError as exc:
                if not (request.idempotent and exc.transient):
                    raise
                if not await self._retry_pause(request, exc, pacer) or deadline.passed():
                    raise _exhausted(exc, pacer.attempts) from exc

    async def _retry_pause(self, request: Request[T], exc: OntapError, pacer: Pacer) -> bool:
        """Wait before asking again: what Retry-After asks, then the paced pause (with its
        jitter, so that many clients do not come back in step). False at the deadline."""
        wait = exc.retry_after
        if wait is not None:
            if not pacer.fits(wait):
                raise OntapTimeout(
                    f"ONTAP at {self._client.origin} answered {request} with HTTP {exc.status}"
                    f" and Retry-After {wait:g}s, past the deadline ({pacer.left():.1f}s"
                    f" left); not asked again: {exc}",
                    request=str(request),
                    status=exc.status,
                ) from exc
            await pacer.sleep(wait)
        return await pacer.pause()

    async def _send(self, request: Request[T], deadline: Deadline) -> T:
        """Send once in a worker thread, abandoned (not waited for) at the deadline."""
        left = deadline.left()
        if left <= 0:
            raise OntapTimeout(
                f"volume {self.volume.name}: deadline passed before {request}",
                request=str(request),
            )
        try:
            return await asyncio.wait_for(asyncio.to_thread(request.send, deadline), left)
        except TimeoutError:
            raise OntapTimeout(
                f"ONTAP at {self._client.origin} {request.unanswered()}", request=str(request)
            ) from None

    # -- results -----------------------------------------------------------------------

    def _status(self, record: OntapRecord) -> ReplicationStatus:
        first, second = (replica.name for replica in self.volume.replicas)
        reversed_ = self._paths is not None and record.source_path == self._paths[1]
        lag = parse_lag_time(record.lag_time)
        return ReplicationStatus(
            mirror_state=record.mirror_state,
            relationship_status=record.relationship_status,
            healthy=record.healthy,
            source=second if reversed_ else first,
            destination=first if reversed_ else second,
            error=record.error,
            last_transfer_bytes=record.transfer_bytes,
            last_transfer_end=record.transfer_end,
            lag=lag,
            lag_source="lag_time" if lag is not None else None,
            raw=record.raw(),
        )

    def _result(
        self,
        operation: str,
        record: OntapRecord,
        changed: bool,
        *,
        bytes_transferred: int | None = None,
    ) -> OperationResult:
        return OperationResult(
            operation, self._status(record), changed, bytes_transferred=bytes_transferred
        )


class _TransferWatch:
    """Tells a transfer started by this operation from the one ONTAP reported before it."""

    def __init__(self, before: OntapRecord, operation: str) -> None:
        self._mark = before.transfer_mark
        self._operation = operation
        self._seen_running = False

    def new(self, record: OntapRecord) -> bool:
        return self._seen_running or record.transfer_mark != self._mark

    def ended(self, record: OntapRecord) -> bool:
        return _idle(record) and self.new(record)

    def observe(self, record: OntapRecord) -> None:
        if record.relationship_status is RelationshipStatus.TRANSFERRING:
            self._seen_running = True
        elif self.new(record) and record.transfer_failed:
            code = next((code for _, code in record.reasons if code), None)
            raise ProviderError(
                f"the {self._operation} transfer {record.transfer_state}: {record.error}",
                code=code or f"transfer_{record.transfer_state}",
                provider_message=record.error or "",
            )


@dataclass(frozen=True)
class _Goal:
    """What confirms an accepted change: ``done`` on a reading (``text`` names it);
    ``check`` raises when a reading shows the change failed."""

    operation: str
    text: str
    done: Callable[[OntapRecord], bool]
    check: Callable[[OntapRecord], None] | None = None


class _NotReached(ProviderTimeout):
    """A wait's deadline passed; ``last`` says what the last read of the relationship gave."""

    def __init__(self, volume: str, goal: str, last: str) -> None:
        super().__init__(f"volume {volume}: {goal} not reached; {last}", code="timeout")
        self.last = last


def _paths_by_export(volume: Volume, uuid: str, source: str, destination: str) -> tuple[str, str]:
    """The ONTAP paths of ``replicas[0]`` and ``[1]``, matched through the exports.

    ONTAP mounts a volume at ``/VOLUME`` unless told otherwise, so the replica whose export
    path has the ONTAP volume's name as one of its parts holds it: ``10.1.13.5:/crr_src``
    is ``svm1:crr_src``. The pairing with more such matches wins. When the exports do not
    tell, the provider refuses to guess: a wrong guess would point a resync at the wrong
    replica.
    """
    parts = [PurePosixPath(replica.export.path).parts for replica in volume.replicas]

    def held(index: int, path: str) -> int:
        return int(path.partition(":")[2] in parts[index])

    as_listed = held(0, source) + held(1, destination)
    swapped = held(0, destination) + held(1, source)
    if as_listed != swapped:
        return (source, destination) if as_listed > swapped else (destination, source)
    exports = ", ".join(str(replica.export) for replica in volume.replicas)
    raise ProviderError(
        f"volume {volume.name}: cannot tell which replica holds {source} and which {destination}"
        f" (SnapMirror relationship {uuid}): the export paths ({exports}) do not name those"
        " volumes. Configure relationship as the destination path svm:volume instead",
        code="direction",
    )


def _part(record: Mapping[str, object], key: str) -> object:
    """The ``name`` of a nested record (``svm``), or None."""
    value = record.get(key)
    return value.get("name") if isinstance(value, dict) else None


def _why(exc: ProviderError) -> str:
    """A failed read in a few words: ``HTTP 403``, ``no answer to GET /api/...``."""
    if isinstance(exc, OntapTimeout):
        return f"no answer to {exc.request}"
    if isinstance(exc, OntapError) and exc.status is not None:
        return f"HTTP {exc.status}"
    return str(exc)


def _exhausted(exc: OntapError, attempts: int) -> OntapError:
    """The last transient failure of a GET, once the deadline leaves no time to ask again."""
    return OntapError(
        f"{exc} (asked {attempts} times until the deadline)",
        request=exc.request,
        code=exc.code,
        provider_message=exc.provider_message,
        status=exc.status,
    )


def _idle(record: OntapRecord) -> bool:
    return record.relationship_status is RelationshipStatus.IDLE


def _broken(record: OntapRecord) -> bool:
    return record.mirror_state is MirrorState.BROKEN


def _say(progress: Progress | None, message: str, said: str = "") -> str:
    """Report ``message`` unless it is what was said last; returns what was said."""
    if progress is not None and message != said:
        progress(message, None)
    return message
