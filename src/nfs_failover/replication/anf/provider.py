"""Azure NetApp Files cross-zone and cross-region replication as a ``Provider``.

Maps the common operations onto ``azure-mgmt-netapp`` (the installed SDK's api-version):
break and resync act on the volume that is the destination now, a reverse resync on the
source. Which volume is which is read from ANF (``endpointType``) on every operation, so
the roles follow ANF after a reverse resync. Threads, deadlines, retries and error
translation live in ``calls``; reading ANF's records into the project's types in
``records``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeVar

from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError
from azure.core.polling import LROPoller
from azure.identity import DefaultAzureCredential
from azure.mgmt.netapp import NetAppManagementClient
from azure.mgmt.netapp import models as anf

from nfs_failover.config import AnfReplication, AnfVolumeId, Volume
from nfs_failover.errors import PreconditionError, ProviderError, ProviderTimeout
from nfs_failover.pacing import Deadline, Pacer
from nfs_failover.replication.anf.calls import (
    CallOptions,
    call,
    fetch_token,
    lro_polling,
    watch_operation,
)
from nfs_failover.replication.anf.records import (
    AnfReplicationInfo,
    endpoint_type,
    export_rules,
    newest_snapmirror,
    read_only_rule,
    refuses_writes,
    replication_info,
    replication_status,
)
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

__all__ = ["AnfProvider"]

_log = logging.getLogger("nfs_failover.replication.anf")

T = TypeVar("T")

_DEFAULT_POLLING_INTERVAL = 5.0  # seconds between status reads and LRO polls, when unset
_MIN_POLLING_INTERVAL = 0.01
_OPPOSITE = {"src": "dst", "dst": "src"}


@dataclass(frozen=True)
class _Side:
    volume: AnfVolumeId
    replica: str


@dataclass(frozen=True)
class _Roles:
    """Which volume ANF replicates from and to now."""

    source: _Side
    destination: _Side

    def swapped(self) -> _Roles:
        return _Roles(source=self.destination, destination=self.source)


@dataclass(frozen=True)
class _Observed:
    roles: _Roles
    status: ReplicationStatus


class AnfProvider(Provider):
    """The replication relationship of one volume on Azure NetApp Files.

    Built from a ``Volume`` whose ``replication`` is an ``AnfReplication``;
    ``volume.replicas[0]`` names the configured source volume, ``replicas[1]`` the
    destination. Operations map onto the SDK as follows (``volumes`` operations):

    - ``status``: ``get`` on the configured destination (its ``endpointType`` says whether
      the roles are swapped; the source is asked only when the destination has no
      replication), then ``replication_status`` and ``snapshots.list`` on the current
      destination.
    - ``break_``: ``begin_break_replication`` on the current destination with
      ``{"forceBreakReplication": force}``.
    - ``resync``: ``begin_resync_replication`` on the current destination (source to
      destination again; the destination's changes are overwritten).
    - ``reverse_resync``: ``begin_resync_replication`` on the current source (destination
      to source; ANF overwrites newer data on the source, and the roles swap).
    - ``fence`` / ``unfence``: ``begin_update`` of the replica's volume with every
      export policy rule read-only / with the rules the fence saved.
    - ``list_replications``: ANF's own entries for a volume, for display.

    Lag is ``now - created`` of the newest ``snapmirror.*`` snapshot on the destination
    (``lag_source="snapshot"``), or None when there is none. That the destination's copy of
    a SnapMirror snapshot keeps the source's creation time is an inference from SnapMirror,
    not checked against live Azure.

    ``overwritten`` is always empty: ANF cannot tell which files changed, so
    ``divergence`` walks both replicas over NFS (see ``nfs_divergence``).

    Idempotence: a break of a broken relationship and a resync of a mirrored one change
    nothing. A reverse resync of a mirrored relationship changes nothing only when this
    provider's own last operation was that reverse resync (ANF keeps no record of the
    direction before it); otherwise it is refused as not broken.

    Preconditions are checked against ANF's status before anything is sent: no break
    unless mirrored; a running transfer is waited for (polling status, bounded by the
    deadline) unless ``force``; resyncs only when broken.
    """

    name = "anf"

    def __init__(
        self,
        volume: Volume,
        *,
        credential: TokenCredential | None = None,
        client: NetAppManagementClient | None = None,
        polling_interval: float | None = None,
    ) -> None:
        """``client``: an SDK client to use for both volumes (both must be in its
        subscription). Otherwise one client per subscription is made on first use, at
        ``management_endpoint`` with the scope ``{management_endpoint}/.default``, from
        ``credential`` or else ``DefaultAzureCredential`` (with ``authority`` when set).
        Nothing is contacted here. ``polling_interval``: seconds between status reads
        while waiting for a transfer, and between LRO polls when ANF sends no
        Retry-After (default 5).
        """
        settings = volume.replication
        if not isinstance(settings, AnfReplication):
            raise ProviderError(
                f"volume {volume.name}: replication provider is {settings.provider}, not anf",
                code="config",
            )
        self._settings = settings
        self._replicas = volume.replicas
        self._configured = _Roles(
            source=_Side(settings.source, volume.replicas[0].name),
            destination=_Side(settings.destination, volume.replicas[1].name),
        )
        interval = _DEFAULT_POLLING_INTERVAL if polling_interval is None else polling_interval
        self._interval = max(interval, _MIN_POLLING_INTERVAL)
        self._lro_interval = max(interval, 0.0)
        self._given_client = client
        self._clients: dict[str, NetAppManagementClient] = {}
        self._own_credential: DefaultAzureCredential | None = None
        if client is not None:
            _check_subscription(client, settings)
            self._credential: TokenCredential | None = None
        elif credential is not None:
            self._credential = credential
        else:
            self._own_credential = _default_credential(settings)
            self._credential = self._own_credential
        # The volume a reverse resync by this object last made the destination (see class doc).
        self._reversed_onto: AnfVolumeId | None = None

    # -- the Provider contract -------------------------------------------------------

    async def status(self, *, timeout: float) -> ReplicationStatus:
        deadline = Deadline(timeout)
        return await self._with_lag(await self._observe(deadline), deadline)

    async def transfer_now(
        self, *, timeout: float, progress: Progress | None = None
    ) -> OperationResult:
        """Not available on ANF: cross-zone and cross-region replication transfers only on
        its schedule (_10minutely, hourly, daily). The SDK's ``performReplicationTransfer``
        is for volumes of type Migration only."""
        raise ProviderError(
            "ANF transfers cross-zone and cross-region replication only on its schedule"
            " (_10minutely, hourly or daily); it has no on-demand transfer for it"
            " (performReplicationTransfer is for Migration volumes only)",
            code="unsupported",
        )

    async def break_(
        self, *, force: bool = False, timeout: float, progress: Progress | None = None
    ) -> OperationResult:
        deadline = Deadline(timeout)
        observed = await self._until_breakable(deadline, force, progress)
        if observed.status.mirror_state is MirrorState.BROKEN:
            return await self._unchanged("break", observed, deadline)
        target = observed.roles.destination
        what = f"breaking replication on {target.replica}"
        _log.info("%s (%s, force=%s)", what, target.volume, force)
        body = anf.BreakReplicationRequest(force_break_replication=force)
        poller = await self._call(
            what,
            deadline,
            target.volume,
            lambda client, options: client.volumes.begin_break_replication(
                *_parts(target.volume),
                body=body,
                polling=lro_polling(deadline, self._lro_interval, _endpoint(client)),
                **options,
            ),
        )
        await watch_operation(what, poller, deadline, progress)
        self._reversed_onto = None
        return await self._changed("break", deadline)

    async def resync(self, *, timeout: float, progress: Progress | None = None) -> OperationResult:
        """Resync on the current destination; ANF cannot list what it overwrites."""
        return await self._resync(Deadline(timeout), progress, reverse=False)

    async def reverse_resync(
        self, *, timeout: float, progress: Progress | None = None
    ) -> OperationResult:
        """Resync on the current source: ANF overwrites the source's newer data (it cannot
        list it) and the roles swap."""
        return await self._resync(Deadline(timeout), progress, reverse=True)

    async def divergence(self, *, timeout: float) -> Divergence:
        """ANF cannot tell which files changed, only when the last replication snapshot
        was taken: both replicas are walked over NFS with the project's own client, and
        files changed since that snapshot are attributed to their side
        (``nfs_divergence``)."""
        deadline = Deadline(timeout)
        observed = await self._observe(deadline)
        status = await self._with_lag(observed, deadline)
        if status.lag is None:
            raise PreconditionError(
                f"no replication snapshot on {status.destination}, so no common point to "
                "compare the replicas with"
            )
        exports = {replica.name: replica.export for replica in self._replicas}
        return await divergence_over_nfs(
            exports[status.source],
            exports[status.destination],
            datetime.now(UTC) - status.lag,
            timeout=deadline.left(),
        )

    async def fence(
        self, replica: str, *, timeout: float, before_change: BeforeFence | None = None
    ) -> FenceResult:
        """Every export policy rule of the replica's volume made read-only by a volume
        update (PATCH of ``exportPolicy.rules``, a long-running operation); ``saved`` is
        the rules as they were (``{"rules": [...]}``, ANF's REST form). Rules that already
        grant no writes are left alone (``changed=False``, ``saved`` what is there). The
        rules are read back once ANF reports the update done."""
        deadline = Deadline(timeout)
        side = self._side(replica)
        rules = await self._export_rules(side, deadline)
        if refuses_writes(rules):
            return FenceResult(
                replica,
                changed=False,
                saved={"rules": rules},
                detail=f"no export policy rule of {side.volume.volume} grants writes",
            )
        saved: Saved = {"rules": rules}
        if before_change is not None:
            await before_change(saved)
        fenced = [read_only_rule(rule) for rule in rules]
        what = f"making the export policy rules of {replica} read-only"
        await self._update_rules(what, side, fenced, deadline)
        if not refuses_writes(await self._export_rules(side, deadline)):
            raise ProviderError(
                f"{what}: ANF reported the update done, but a rule of {side.volume.volume}"
                " still grants writes",
                code="not_fenced",
            )
        return FenceResult(
            replica,
            changed=True,
            saved=saved,
            detail=f"{len(rules)} export policy rules of {side.volume.volume} made read-only",
        )

    async def unfence(self, replica: str, saved: Saved, *, timeout: float) -> OperationResult:
        """The volume's export policy rules set back to ``saved["rules"]`` by a volume
        update; nothing is sent when they already are."""
        deadline = Deadline(timeout)
        side = self._side(replica)
        wanted = saved.get("rules")
        if not isinstance(wanted, list) or not all(isinstance(r, dict) for r in wanted):
            raise ProviderError(
                f"cannot unfence {replica}: the saved state holds no export policy rules"
                f" ({str(saved)[:200]})",
                code="bad_saved",
            )
        changed = await self._export_rules(side, deadline) != wanted
        if changed:
            what = f"restoring the export policy rules of {replica}"
            await self._update_rules(what, side, wanted, deadline)
        return await self._changed("unfence", deadline, changed=changed)

    async def close(self) -> None:
        """Close the clients and the credential this provider made; a client or credential
        passed in stays open (it is the caller's)."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        if self._own_credential is not None:
            self._own_credential.close()

    # -- beyond the contract -----------------------------------------------------------

    async def list_replications(
        self, *, timeout: float, on: AnfVolumeId | None = None
    ) -> tuple[AnfReplicationInfo, ...]:
        """ANF's ``listReplications`` of ``on`` (default: the configured source volume)."""
        volume = on or self._configured.source.volume
        entries = await self._call(
            f"listing the replications of {volume.volume}",
            Deadline(timeout),
            volume,
            lambda client, options: list(
                client.volumes.list_replications(*_parts(volume), **options)
            ),
        )
        return tuple(replication_info(entry) for entry in entries)

    # -- internals ---------------------------------------------------------------------

    async def _resync(
        self, deadline: Deadline, progress: Progress | None, *, reverse: bool
    ) -> OperationResult:
        operation = "reverse_resync" if reverse else "resync"
        observed = await self._observe(deadline)
        status, roles = observed.status, observed.roles
        if status.mirror_state is MirrorState.MIRRORED and self._in_requested_direction(
            roles, reverse=reverse
        ):
            return await self._unchanged(operation, observed, deadline)
        if status.mirror_state is not MirrorState.BROKEN:
            state = _said(status, "mirrorState")
            raise PreconditionError(
                f"cannot {operation.replace('_', ' ')}: the relationship from {status.source}"
                f" to {status.destination} is {state}, and ANF resyncs only a broken one"
            )
        # ANF overwrites the volume it is asked to resync on: the destination for a
        # resync, the source for a reverse resync (which then becomes the destination).
        target = roles.source if reverse else roles.destination
        what = (
            f"reverse resyncing {target.replica} from {roles.destination.replica}"
            if reverse
            else f"resyncing {target.replica} from {roles.source.replica}"
        )
        _log.info("%s (%s)", what, target.volume)
        poller: LROPoller[None] = await self._call(
            what,
            deadline,
            target.volume,
            lambda client, options: client.volumes.begin_resync_replication(
                *_parts(target.volume),
                polling=lro_polling(deadline, self._lro_interval, _endpoint(client)),
                **options,
            ),
        )
        await watch_operation(what, poller, deadline, progress)
        self._reversed_onto = target.volume if reverse else None
        return await self._changed(operation, deadline)

    def _in_requested_direction(self, roles: _Roles, *, reverse: bool) -> bool:
        if not reverse:
            return True  # a resync asks for mirrored in the current direction
        last = self._reversed_onto
        return last is not None and last.same_volume(roles.destination.volume)

    async def _unchanged(
        self, operation: str, observed: _Observed, deadline: Deadline
    ) -> OperationResult:
        _log.info("%s: nothing to do (%s)", operation, observed.status.mirror_state)
        status = await self._with_lag(observed, deadline)
        return OperationResult(operation, status, changed=False)

    def _side(self, replica: str) -> _Side:
        for side in (self._configured.source, self._configured.destination):
            if side.replica == replica:
                return side
        names = f"{self._configured.source.replica}, {self._configured.destination.replica}"
        raise ProviderError(f"no replica {replica} (the replicas are {names})", code="config")

    async def _export_rules(self, side: _Side, deadline: Deadline) -> list[dict[str, object]]:
        volume = await self._call(
            f"reading the export policy of {side.replica}",
            deadline,
            side.volume,
            lambda client, options: client.volumes.get(*_parts(side.volume), **options),
            read=True,
        )
        return export_rules(volume)

    async def _update_rules(
        self, what: str, side: _Side, rules: list[dict[str, object]], deadline: Deadline
    ) -> None:
        """PATCH the volume's export policy with ``rules`` (ANF replaces the whole list)
        and wait for the operation; sent once, never again on a guess."""
        body = anf.VolumePatch(
            properties=anf.VolumePatchProperties(
                export_policy=anf.VolumePatchPropertiesExportPolicy(
                    rules=[anf.ExportPolicyRule(rule) for rule in rules]
                )
            )
        )
        _log.info("%s (%s)", what, side.volume)
        poller = await self._call(
            what,
            deadline,
            side.volume,
            lambda client, options: client.volumes.begin_update(
                *_parts(side.volume),
                body=body,
                polling=lro_polling(deadline, self._lro_interval, _endpoint(client)),
                **options,
            ),
        )
        await watch_operation(what, poller, deadline, None)

    async def _changed(
        self, operation: str, deadline: Deadline, *, changed: bool = True
    ) -> OperationResult:
        """The result of an operation ANF reported done: the status read afresh (asked
        again after transient errors). If it still cannot be read, the error says that ANF
        reported the operation done, so nobody takes it for a failed one."""
        try:
            observed = await self._observe(deadline)
        except ProviderError as exc:
            raise type(exc)(
                f"{operation}: ANF reported it done, but its state could not be read back:"
                f" {exc}; read the status before acting again",
                code=exc.code,
                provider_message=exc.provider_message,
            ) from exc
        status = await self._with_lag(observed, deadline)
        return OperationResult(operation, status, changed=changed)

    async def _until_breakable(
        self, deadline: Deadline, force: bool, progress: Progress | None
    ) -> _Observed:
        """The relationship once a break may be sent or is not needed. While a transfer
        runs (and not ``force``) status is polled until it ends, within the deadline."""
        observed = await self._observe(deadline)
        if _break_step(observed.status, force) != "wait":
            return observed
        if progress is not None:
            progress(f"waiting for the transfer to {observed.status.destination} to end", None)
        pacer = Pacer.every(self._interval, deadline)
        while _break_step(observed.status, force) == "wait":
            if not await pacer.pause_whole():
                raise self._transfer_outlasted(observed.status, deadline)
            try:
                observed = await self._observe(deadline)
            except ProviderTimeout:
                raise self._transfer_outlasted(observed.status, deadline) from None
        return observed

    @staticmethod
    def _transfer_outlasted(status: ReplicationStatus, deadline: Deadline) -> ProviderTimeout:
        # What was really waited (the last status poll may come before the deadline).
        waited = deadline.elapsed()
        return ProviderTimeout(
            f"cannot break: a transfer to {status.destination} was still running after"
            f" {waited:.1f}s of the {deadline.timeout:g}s deadline; nothing was changed"
            " (break with force to interrupt it)"
        )

    async def _observe(self, deadline: Deadline) -> _Observed:
        """The roles and ANF's replication status, without lag (no snapshot listing)."""
        roles = await self._roles(deadline)
        destination = roles.destination
        raw = await self._call(
            f"reading the replication status of {destination.replica}",
            deadline,
            destination.volume,
            lambda client, options: client.volumes.replication_status(
                *_parts(destination.volume), **options
            ),
            read=True,
        )
        status = replication_status(
            raw,
            source=roles.source.replica,
            destination=destination.replica,
            destination_volume=str(destination.volume),
        )
        return _Observed(roles, status)

    async def _with_lag(self, observed: _Observed, deadline: Deadline) -> ReplicationStatus:
        """The status with its lag; a lag that cannot be read (a role without
        snapshots/read, an error) is unknown, with the reason, and changes nothing else:
        neither a status nor an operation's outcome depends on it."""
        try:
            return await self._lag_of(observed, deadline)
        except ProviderError as exc:
            _log.warning("lag unknown: %s", exc)
            return dataclasses.replace(
                observed.status, raw={**observed.status.raw, "lag_unknown": str(exc)}
            )

    async def _lag_of(self, observed: _Observed, deadline: Deadline) -> ReplicationStatus:
        destination = observed.roles.destination
        snapshots = await self._call(
            f"listing the snapshots of {destination.replica}",
            deadline,
            destination.volume,
            lambda client, options: list(
                client.snapshots.list(*_parts(destination.volume), **options)
            ),
            read=True,
        )
        newest = newest_snapmirror(snapshots)
        if newest is None:
            return observed.status
        lag = max(datetime.now(UTC) - newest, timedelta(0))
        return dataclasses.replace(observed.status, lag=lag, lag_source="snapshot")

    async def _roles(self, deadline: Deadline) -> _Roles:
        configured = self._configured
        kind = await self._endpoint_type(configured.destination, deadline)
        if kind is None:
            kind = _OPPOSITE.get(await self._endpoint_type(configured.source, deadline) or "")
        if kind == "dst":
            return configured
        if kind == "src":
            return configured.swapped()
        raise ProviderError(
            f"neither {configured.source.replica} ({configured.source.volume.volume}) nor"
            f" {configured.destination.replica} ({configured.destination.volume.volume}) is"
            " in an ANF replication relationship",
            code="not_replicated",
        )

    async def _endpoint_type(self, side: _Side, deadline: Deadline) -> str | None:
        volume = await self._call(
            f"reading volume {side.replica}",
            deadline,
            side.volume,
            lambda client, options: client.volumes.get(*_parts(side.volume), **options),
            read=True,
        )
        return endpoint_type(volume)

    async def _call(
        self,
        what: str,
        deadline: Deadline,
        volume: AnfVolumeId,
        request: Callable[[NetAppManagementClient, CallOptions], T],
        *,
        read: bool = False,
    ) -> T:
        """One request; a ``read`` (GET, or a POST that only lists) is asked again after a
        server error or a dropped connection, within the deadline."""
        client = self._client(volume)
        if self._given_client is None and self._credential is not None:
            scope = f"{self._settings.management_endpoint}/.default"
            await fetch_token(self._credential, scope, deadline)
        return await call(what, deadline, lambda options: request(client, options), read=read)

    def _client(self, volume: AnfVolumeId) -> NetAppManagementClient:
        if self._given_client is not None:
            return self._given_client
        subscription = volume.subscription.lower()
        client = self._clients.get(subscription)
        if client is None:
            assert self._credential is not None  # set whenever no client was given
            endpoint = self._settings.management_endpoint
            verify: bool | str = str(self._settings.ca_file) if self._settings.ca_file else True
            client = NetAppManagementClient(
                self._credential,
                volume.subscription,
                base_url=endpoint,
                credential_scopes=[f"{endpoint}/.default"],
                connection_verify=verify,
            )
            self._clients[subscription] = client
        return client


# -- helpers -----------------------------------------------------------------------------

_BreakStep = Literal["done", "send", "wait"]


def _break_step(status: ReplicationStatus, force: bool) -> _BreakStep:
    """What a break does in this state: nothing, send it, or wait for the transfer."""
    if status.mirror_state is MirrorState.BROKEN:
        return "done"
    if status.mirror_state is MirrorState.UNINITIALIZED:
        raise PreconditionError(
            f"cannot break: the relationship to {status.destination} is not initialized"
            " yet (no baseline transfer has completed)"
        )
    if status.mirror_state is not MirrorState.MIRRORED:
        raise PreconditionError(
            f"cannot break: the relationship to {status.destination} is"
            f" {_said(status, 'mirrorState')}, and ANF breaks only a mirrored one"
        )
    if force or status.relationship_status is RelationshipStatus.IDLE:
        return "send"
    if status.relationship_status is RelationshipStatus.TRANSFERRING:
        return "wait"
    raise PreconditionError(
        f"cannot break: the relationship to {status.destination} is"
        f" {_said(status, 'relationshipStatus')}, neither idle nor transferring;"
        " break with force to override"
    )


def _said(status: ReplicationStatus, key: str) -> str:
    word = status.raw.get(key)
    return f'"{word}"' if word else "unknown"


def _parts(volume: AnfVolumeId) -> tuple[str, str, str, str]:
    return (volume.resource_group, volume.account, volume.pool, volume.volume)


def _endpoint(client: NetAppManagementClient) -> str:
    return client._config.base_url


def _check_subscription(client: NetAppManagementClient, settings: AnfReplication) -> None:
    served = client._config.subscription_id.lower()
    for volume in (settings.source, settings.destination):
        if volume.subscription.lower() != served:
            raise ProviderError(
                f"the client given serves subscription {served}, but volume {volume.volume}"
                f" is in subscription {volume.subscription}",
                code="config",
            )


def _default_credential(settings: AnfReplication) -> DefaultAzureCredential:
    """DefaultAzureCredential, or ProviderError naming what is wrong with its set-up (an
    empty client secret, an invalid tenant id, an http:// authority, ...): azure-identity
    raises those from the constructor, as ValueError or its own errors."""
    options: dict[str, object] = {}
    if settings.authority:
        options["authority"] = settings.authority
    if settings.ca_file:
        options["connection_verify"] = str(settings.ca_file)
    try:
        return DefaultAzureCredential(**options)
    except (ValueError, TypeError, AzureError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ProviderError(
            f"cannot set up the Azure credential: {first}", code="credentials"
        ) from None
