"""The models of the config file: ``Config`` and everything under it.

Each model is a frozen pydantic model that forbids unknown keys; its fields use the types
of ``values`` and ``fields``, and its ``after`` validators run the rules of ``checks``.
``PolicyOverride`` is built from ``Policy``'s fields (each made optional), so the two
cannot drift apart. Defaults are written into the JSON schema by hand, as a user would
write them (``20m``): pydantic writes them by their Python type (``PT20M``). That schema
is what ``nfs_failover.config_reference`` renders into docs/config.md.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    create_model,
    model_validator,
)

from nfs_failover.config import checks
from nfs_failover.config.fields import (
    HOOK_PLACEHOLDERS,
    AbsolutePath,
    Argv,
    Debounce,
    EtcdPrefix,
    FullWalkInterval,
    HostName,
    HttpsUrl,
    MapKey,
    MountOptions,
    Name,
    PositiveDuration,
    Relationship,
    Schedule,
    SecretFilePath,
    WholeSeconds,
    Zone,
    choice,
    hook_shape,
)
from nfs_failover.config.problems import report
from nfs_failover.config.values import (
    AnfVolumeId,
    Export,
    Failback,
    HostPort,
    Mode,
    StoreUrl,
    TextValue,
)
from nfs_failover.durations import format_duration

__all__ = [
    "PROVIDERS",
    "AnfReplication",
    "ApiSettings",
    "AutofsSettings",
    "Config",
    "EtcdSettings",
    "EtcdTls",
    "GaneshaExport",
    "Group",
    "Hook",
    "Hooks",
    "LocalReplication",
    "MountSettings",
    "OntapReplication",
    "Policy",
    "PolicyOverride",
    "Replica",
    "Replication",
    "Volume",
]


def _json_default(value: object) -> object:
    """A default as a user would write it in the file (``20m``, not ``PT20M``)."""
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, TextValue | PurePath):
        return str(value)
    if isinstance(value, tuple):
        return [_json_default(item) for item in value]
    return value


def _document_defaults(schema: dict[str, Any], model: type[BaseModel]) -> None:
    # Pydantic writes defaults by their Python type, not by the field's serializer.
    for name, field in model.model_fields.items():
        if field.is_required() or name not in schema.get("properties", {}):
            continue
        value = field.get_default(call_default_factory=True)
        if value is not None and not isinstance(value, BaseModel):
            schema["properties"][name]["default"] = _json_default(value)


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra=_document_defaults,
    )


class Policy(_Model):
    """When to fail over and fail back: the guardrails."""

    probe_interval: PositiveDuration = Field(
        timedelta(seconds=1), description="How often each endpoint is probed."
    )
    probe_timeout: PositiveDuration = Field(
        timedelta(seconds=2),
        description="Deadline of one probe; a probe without an answer by then has failed.",
    )
    failover_after: PositiveDuration = Field(
        timedelta(seconds=60),
        description="Grace period: how long the source must stay down before failover."
        " Keep it well above a blip.",
    )
    recover_after: PositiveDuration = Field(
        timedelta(seconds=30),
        description="How long an endpoint must keep answering before it counts as up again.",
    )
    max_lag: PositiveDuration = Field(
        timedelta(minutes=20),
        description="RPO limit: a read-write volume fails over on its own only if the"
        " replication lag is within it; otherwise it refuses, says why, and waits for"
        " `failover --force`.",
    )
    failback: Annotated[Failback, choice(Failback)] = Field(
        Failback.MANUAL,
        description="manual: fail back only on command; automatic: once the source is healthy"
        " and resynced.",
    )
    read_only_fallback: bool = Field(
        False,
        strict=True,
        description="For a read-write volume: list the read-only destination after the source"
        " in the autofs map, so clients can still read before a failover.",
    )
    quorum: int = Field(
        1,
        strict=True,
        ge=1,
        description="How many vantage points (agents) must see the source down before it is down.",
    )
    transfer_wait: PositiveDuration = Field(
        timedelta(minutes=5),
        description="How long failback waits for the final transfer before giving up.",
    )

    @model_validator(mode="after")
    def _check_order(self) -> Self:
        report(checks.policy_problems(self))
        return self


class _PolicyOverride(_Model):
    """Per-volume changes to the global policy; a field left out keeps the global value."""

    def apply_to(self, policy: Policy) -> Policy:
        """``policy`` with this override's fields replaced."""
        return policy.model_copy(update=self.model_dump(exclude_none=True))


def _all_optional(model: type[BaseModel]) -> dict[str, Any]:
    """The fields of ``model``, each optional: same type, checks and description, default None.

    The checks stay on the type inside ``| None``, so an explicit null means "not set"
    rather than a value the check refuses.
    """
    return {
        name: (
            Annotated[field.annotation, *field.metadata] | None,
            Field(None, description=field.description),
        )
        for name, field in model.model_fields.items()
    }


if TYPE_CHECKING:
    # mypy sees no fields in a model create_model builds; it checks the methods here.
    PolicyOverride = _PolicyOverride
else:
    # The override has every field of Policy, so a field added there can be overridden too.
    PolicyOverride = create_model(
        "PolicyOverride",
        __base__=_PolicyOverride,
        __doc__=_PolicyOverride.__doc__,
        __module__=__name__,
        **_all_optional(Policy),
    )


# -- volumes -----------------------------------------------------------------------------


class Replica(_Model):
    """One copy of a volume, as clients mount it."""

    name: Name = Field(description="Name of the replica, unique within its volume.")
    export: Export = Field(description="Where clients mount it: HOST:/PATH.")
    zone: Zone | None = Field(None, description="Availability zone or site of the replica.")


class MountSettings(_Model):
    """How clients mount the volume through autofs."""

    map_key: MapKey | None = Field(
        None,
        description="Key of the volume in the autofs map (the directory under mount_root);"
        " defaults to the volume name.",
    )
    options: MountOptions = Field(
        "hard,tcp",
        description="NFS mount options, comma-separated, without -fstype (nfs-failover adds"
        " it). No whitespace, quotes or #; must not start with '-'.",
    )


class GaneshaExport(_Model):
    """An NFS-Ganesha export the local engine controls: its config file and its pid file."""

    config: AbsolutePath = Field(
        description="ganesha.conf holding the EXPORT block of the folder; the engine rewrites"
        " its Access_Type (RO while it is a destination, RW otherwise)."
    )
    pidfile: AbsolutePath = Field(
        description="Ganesha's pid file; the engine sends SIGHUP so Ganesha rereads exports."
    )


DEFAULT_FULL_WALK = timedelta(hours=1)


class LocalReplication(_Model):
    """The embedded engine: two NFS-Ganesha export directories, kept in step with rsync,
    sending only the changes the engine saw happen on the source."""

    provider: Literal["local"] = Field(description="Replication engine: local.")
    source_path: AbsolutePath = Field(description="Directory exported as the source replica.")
    destination_path: AbsolutePath = Field(
        description="Directory exported (read-only while mirrored) as the destination replica."
    )
    schedule: Schedule = Field(
        timedelta(minutes=10),
        description="When to transfer: continuous (as soon as changes settle, see debounce),"
        " or an interval: a duration from 1s to 1d, or _10minutely, hourly, daily.",
    )
    debounce: Debounce = Field(
        timedelta(milliseconds=100),
        description="With schedule continuous: a transfer starts once no change has come for"
        " this long, and under steady writes at the latest three times this long after the"
        " oldest change not yet sent; 10ms to 10s.",
    )
    full_walk_interval: FullWalkInterval | None = Field(
        None,
        description="How often a transfer walks the whole tree instead of sending only the"
        " changes the engine saw, to catch any it could not see (docs/replication.md); 1m to"
        " 7d, not shorter than an interval schedule. Default 1h, or the schedule if longer.",
    )
    state_dir: AbsolutePath | None = Field(
        None,
        description="Where the engine keeps the relationship's state and transfer manifests;"
        " default /var/lib/nfs-failover/local/VOLUME.",
    )
    source_export: GaneshaExport | None = Field(
        None,
        description="The NFS-Ganesha serving source_path, so the engine can make it read-only"
        " or writable; without it the engine moves data but cannot enforce access.",
    )
    destination_export: GaneshaExport | None = Field(
        None, description="The NFS-Ganesha serving destination_path (see source_export)."
    )

    @model_validator(mode="after")
    def _check_paths(self) -> Self:
        report(checks.local_path_problems(self) + checks.local_schedule_problems(self))
        return self

    def full_walk_every(self) -> timedelta:
        """The safety walk's interval: as configured, else 1h or the schedule if longer."""
        if self.full_walk_interval is not None:
            return self.full_walk_interval
        schedule = self.schedule if isinstance(self.schedule, timedelta) else timedelta(0)
        return max(DEFAULT_FULL_WALK, schedule)


class AnfReplication(_Model):
    """Azure NetApp Files cross-zone (or cross-region) replication."""

    provider: Literal["anf"] = Field(description="Replication engine: anf.")
    source: AnfVolumeId = Field(description="Resource id of the source volume.")
    destination: AnfVolumeId = Field(description="Resource id of the destination volume.")
    management_endpoint: HttpsUrl = Field(
        "https://management.azure.com",
        description="Azure Resource Manager endpoint: https://management.usgovcloudapi.net for"
        " Azure Government, https://management.chinacloudapi.cn for Azure China.",
    )
    authority: HostName | None = Field(
        None,
        description="Microsoft Entra authority host for DefaultAzureCredential, such as"
        " login.microsoftonline.us; default: AZURE_AUTHORITY_HOST or the public cloud.",
    )
    ca_file: AbsolutePath | None = Field(
        None,
        description="CA bundle to verify Azure Resource Manager's certificate with (a TLS"
        " inspecting proxy's CA); default: the system's, or REQUESTS_CA_BUNDLE.",
    )

    @model_validator(mode="after")
    def _check_distinct(self) -> Self:
        report(checks.anf_volume_problems(self))
        return self


class OntapReplication(_Model):
    """NetApp ONTAP SnapMirror through the ONTAP REST API."""

    provider: Literal["ontap"] = Field(description="Replication engine: ontap.")
    cluster: HostName = Field(description="Cluster management address (DNS name or IP).")
    relationship: Relationship = Field(
        description='SnapMirror relationship: its UUID or destination path "svm:volume".'
    )
    port: int = Field(443, ge=1, le=65535, strict=True, description="HTTPS port of the REST API.")
    credentials_file: SecretFilePath | None = Field(
        None,
        description="File holding the ONTAP user name and password, one per line; without it"
        " NFS_FAILOVER_ONTAP_USERNAME and NFS_FAILOVER_ONTAP_PASSWORD are read.",
    )
    verify_tls: bool = Field(True, strict=True, description="Verify the cluster's certificate.")
    ca_file: AbsolutePath | None = Field(
        None, description="CA bundle to verify the cluster's certificate with (default: system)."
    )


Replication = Annotated[
    LocalReplication | AnfReplication | OntapReplication, Field(discriminator="provider")
]
PROVIDERS = ("local", "anf", "ontap")


class Volume(_Model):
    """A replicated pair of NFS volumes that clients see as one autofs key."""

    name: Name = Field(description="Name of the volume, unique in the file.")
    mode: Annotated[Mode, choice(Mode)] = Field(
        description="read-write: failover breaks replication and fences the old source;"
        " read-only: failover only steers clients."
    )
    mount: MountSettings = Field(
        default_factory=MountSettings, description="How clients mount the volume."
    )
    replicas: Annotated[tuple[Replica, ...], AfterValidator(checks.check_replicas)] = Field(
        description="Exactly two replicas: the source first, the destination second."
    )
    replication: Replication = Field(description="The replication engine and its relationship.")
    policy: PolicyOverride = Field(
        default_factory=PolicyOverride, description="Changes to the global policy for this volume."
    )

    @property
    def source(self) -> Replica:
        """The replica clients use in normal operation (the first one)."""
        return self.replicas[0]

    @property
    def destination(self) -> Replica:
        """The replica replication copies to (the second one)."""
        return self.replicas[1]

    @property
    def map_key(self) -> str:
        """The volume's key in the autofs map: ``mount.map_key`` or the volume name."""
        return self.mount.map_key or self.name

    @model_validator(mode="after")
    def _check_volume(self) -> Self:
        report(checks.volume_problems(self))
        return self


# -- the rest of the file ----------------------------------------------------------------


class AutofsSettings(_Model):
    """The autofs files nfs-failover owns (never the user's own maps)."""

    mount_root: AbsolutePath = Field(
        Path("/misc"), description="Directory under which autofs mounts the volumes."
    )
    master_dropin: AbsolutePath = Field(
        Path("/etc/auto.master.d/nfs-failover.autofs"),
        description="Master-map drop-in naming mount_root and map_file; must end in .autofs.",
    )
    map_file: AbsolutePath = Field(
        Path("/etc/auto.nfs-failover"), description="The indirect map nfs-failover writes."
    )
    timeout: WholeSeconds = Field(
        timedelta(seconds=10), description="autofs --timeout: idle time before unmounting."
    )
    negative_timeout: WholeSeconds = Field(
        timedelta(seconds=5),
        description="autofs --negative-timeout: how long a failed key is cached.",
    )
    applied_state: AbsolutePath = Field(
        Path("/var/lib/nfs-failover/applied.json"),
        description="Where the agent keeps the desired state it last applied: a store that"
        " lost a volume's record (emptied, replaced, a corrupt row) never makes it offer a"
        " fenced replica again.",
    )
    root: AbsolutePath = Field(
        Path("/"),
        description="Prefix under which master_dropin, map_file and applied_state are"
        " written: / on a real host, a directory in the lab and in tests.",
    )

    pidfile: AbsolutePath = Field(
        Path("/run/autofs.pid"),
        description="automount's pid file, for the SIGHUP that makes it reread the maps when"
        " systemd does not run it (Debian's unit and init script write /run/autofs.pid).",
    )

    def under_root(self, path: Path) -> Path:
        """Where ``path`` (one of the absolute paths above) really is on this host."""
        return self.root / path.relative_to("/")

    @model_validator(mode="after")
    def _check_files(self) -> Self:
        report(checks.autofs_problems(self))
        return self


class ApiSettings(_Model):
    """The HTTP API: status, history, health and metrics; actions need the token."""

    listen: HostPort = Field(
        default_factory=lambda: HostPort("127.0.0.1", 8741),
        description="Address and port to listen on, HOST:PORT.",
    )
    token_file: SecretFilePath = Field(
        Path("/etc/nfs-failover/token"),
        description="File holding the bearer token that actions require.",
    )
    socket: AbsolutePath = Field(
        Path("/run/nfs-failover/api.sock"),
        description="Unix socket the CLI talks to (status and actions), in a folder only the"
        " controller's user may write; the CLI checks who listens there before it sends the"
        " token.",
    )


class Hook(_Model):
    """A program run before or after a failover or failback; never through a shell."""

    argv: Argv = Field(
        description="Program (absolute path) and arguments. Placeholders: "
        + ", ".join(f"{{{name}}}" for name in HOOK_PLACEHOLDERS)
        + " (from_/to_ name the replica clients leave and the one they go to; {group} is the"
        " volume's group or empty, {members} the group's volumes comma-separated, or the"
        " volume alone)."
    )
    timeout: PositiveDuration | None = Field(
        None, description="Deadline for this hook; defaults to hooks.timeout."
    )

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, value: object) -> object:
        # Hooks are usually written as a bare argv list; the mapping form adds a timeout.
        return hook_shape(value)


_HOOK_LIST_DOC = "Hooks run one at a time, in order. Each is an argv list, or {argv, timeout}."


class Hooks(_Model):
    """Programs run around failover and failback. A failing pre-hook stops the workflow."""

    pre_failover: tuple[Hook, ...] = Field((), description=f"Before failover. {_HOOK_LIST_DOC}")
    post_failover: tuple[Hook, ...] = Field((), description=f"After failover. {_HOOK_LIST_DOC}")
    pre_failback: tuple[Hook, ...] = Field((), description=f"Before failback. {_HOOK_LIST_DOC}")
    post_failback: tuple[Hook, ...] = Field((), description=f"After failback. {_HOOK_LIST_DOC}")
    timeout: PositiveDuration = Field(
        timedelta(seconds=60), description="Deadline of each hook that sets none of its own."
    )

    def timeout_for(self, hook: Hook) -> timedelta:
        return hook.timeout if hook.timeout is not None else self.timeout


class EtcdTls(_Model):
    """TLS to the etcd members. Only the files named here are trusted and sent: no
    environment variable (REQUESTS_CA_BUNDLE, ...) and no system CA is read."""

    ca_file: AbsolutePath = Field(
        description="The CA that signed the members' certificates; the only one trusted."
    )
    cert_file: AbsolutePath | None = Field(
        None, description="This host's client certificate (PEM), when the members ask for one."
    )
    key_file: SecretFilePath | None = Field(
        None, description="The private key of cert_file (PEM, unencrypted, mode 0600)."
    )

    @model_validator(mode="after")
    def _check_pair(self) -> Self:
        report(checks.etcd_tls_problems(self))
        return self


class EtcdSettings(_Model):
    """The etcd store (``store: etcd://...``): where its keys live and how to reach it."""

    prefix: EtcdPrefix = Field(
        "/nfs-failover/",
        description="Every key of this installation starts with it: one prefix per set of"
        " controllers and agents that share a desired state.",
    )
    tls: EtcdTls | None = Field(
        None, description="TLS settings; without them the members are reached over plain HTTP."
    )


class Group(_Model):
    """Volumes that fail over, fail back and switch over together: the data and the logs of
    one application. The decision is the group's (any member's source down past its grace
    fails the whole group over), every member's guardrails are checked before any member
    is broken, and one workflow moves them all (docs/controller.md, Groups)."""

    name: Name = Field(
        description="Name of the group, unique in the file and no volume's name: manual"
        " actions and the journal use it (`nfs-failover failover GROUP`)."
    )
    volumes: Annotated[tuple[Name, ...], AfterValidator(checks.check_members)] = Field(
        description="Names of its volumes, at least two, all of one mode; a volume is in at"
        " most one group. The workflow handles them in this order."
    )


def _at_least_one(volumes: tuple[Volume, ...]) -> tuple[Volume, ...]:
    if not volumes:
        raise ValueError("expected at least one volume")
    return volumes


class Config(_Model):
    """The whole configuration file."""

    volumes: Annotated[tuple[Volume, ...], AfterValidator(_at_least_one)] = Field(
        description="The replicated volume pairs to watch."
    )
    policy: Policy = Field(
        default_factory=Policy, description="Global policy; volumes may override any field."
    )
    autofs: AutofsSettings = Field(
        default_factory=AutofsSettings, description="autofs files and timeouts."
    )
    store: StoreUrl = Field(
        default_factory=lambda: StoreUrl.parse("sqlite:///var/lib/nfs-failover/state.db"),
        description="Journal and desired state: sqlite:///ABSOLUTE/PATH (one host) or"
        " etcd://HOST:PORT[,HOST:PORT...] (controllers and agents on many hosts).",
    )
    etcd: EtcdSettings = Field(
        default_factory=EtcdSettings, description="The etcd store's prefix and TLS."
    )
    api: ApiSettings = Field(default_factory=ApiSettings, description="The HTTP API.")
    hooks: Hooks = Field(default_factory=Hooks, description="Programs run around transitions.")
    groups: tuple[Group, ...] = Field(
        (), description="Volumes that fail over together; a volume in no group acts alone."
    )

    _source: str | None = PrivateAttr(None)

    @property
    def source(self) -> str | None:
        """The path the file was loaded from, as the user gave it (None if not from a file)."""
        return self._source

    def volume(self, name: str) -> Volume:
        """The volume called ``name``; ``KeyError`` if there is none."""
        for volume in self.volumes:
            if volume.name == name:
                return volume
        raise KeyError(name)

    def group(self, name: str) -> Group:
        """The group called ``name``; ``KeyError`` if there is none."""
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(name)

    def group_of(self, volume: str) -> Group | None:
        """The group ``volume`` belongs to, or None when it acts alone."""
        return next((g for g in self.groups if volume in g.volumes), None)

    def effective_policy(self, volume: Volume | str) -> Policy:
        """The global policy with the volume's overrides applied."""
        found = self.volume(volume) if isinstance(volume, str) else volume
        return found.policy.apply_to(self.policy)

    @model_validator(mode="after")
    def _check_across_volumes(self) -> Self:
        report(checks.config_problems(self))
        return self
