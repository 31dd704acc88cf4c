"""The configuration file: its models, their checks, and loading with one-line problems.

Owns the YAML schema (``Config`` and the models under it), the small value types that
other modules reuse (``Export``, ``HostPort``, ``AnfVolumeId``, ``StoreUrl``), and
``load_config``, which reports every problem as ``FILE: FIELD.PATH: message``.

Durations are stored as ``datetime.timedelta`` (see ``nfs_failover.durations``) and written
back canonically (``1m30s``) when a model is dumped in JSON mode. Values that end up in
autofs maps, Ganesha export blocks or argv lists are checked against a conservative
character set, so that no config value can corrupt a map or smuggle options into it.

Cross-field checks (unique names, ``failover_after >= probe_interval``, ...) run once the
fields they compare are valid themselves, so they are reported with the field problems
of other parts of the file, but not with those of the same volume.
"""

from __future__ import annotations

import ipaddress
import json
import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from pathlib import Path, PurePath, PurePosixPath
from typing import Annotated, Any, ClassVar, Literal, Self, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import ErrorDetails, core_schema

from nfs_failover import files
from nfs_failover.durations import DURATION_HINT, format_duration, parse_duration
from nfs_failover.errors import ConfigError
from nfs_failover.steering.autofs_model import MapValueError
from nfs_failover.steering.autofs_render import foreign_file, map_host, preference_entry

__all__ = [
    "HOOK_PLACEHOLDERS",
    "PROVIDERS",
    "AnfReplication",
    "AnfVolumeId",
    "ApiSettings",
    "AutofsSettings",
    "Config",
    "Export",
    "Failback",
    "Hook",
    "Hooks",
    "HostPort",
    "LocalReplication",
    "Mode",
    "MountSettings",
    "OntapReplication",
    "Policy",
    "PolicyOverride",
    "Replica",
    "Replication",
    "StoreUrl",
    "Volume",
    "format_duration",
    "load_config",
    "parse_config",
    "parse_duration",
    "summary",
]

Loc = tuple[str | int, ...]
_E = TypeVar("_E", bound=StrEnum)

PROVIDERS = ("local", "anf", "ontap")
HOOK_PLACEHOLDERS = ("volume", "event", "from_replica", "to_replica", "from_export", "to_export")
MAX_FILE_BYTES = 1024 * 1024

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_MAP_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
_ZONE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_DNS_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")
# Paths land in autofs maps, Ganesha export blocks and rsync argv: a conservative set.
_PATH_CHAR = re.compile(r"[A-Za-z0-9/._+@=~-]")
_MAX_PATH = 1024
_OPTION_CHAR = re.compile(r"[A-Za-z0-9_.:/@+=,-]")
_OPTION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*(?:=[A-Za-z0-9_.:/@+-]+)?")
_GUID = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
_ANF_ID = re.compile(
    r"/subscriptions/(?P<subscription>[^/]+)/resourceGroups/(?P<resource_group>[^/]+)"
    r"/providers/Microsoft\.NetApp/netAppAccounts/(?P<account>[^/]+)"
    r"/capacityPools/(?P<pool>[^/]+)/volumes/(?P<volume>[^/]+)",
    re.IGNORECASE,
)
_ANF_PARTS = {
    "resource_group": re.compile(r"[\w.()-]{0,89}[\w()-]"),
    "account": re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}"),
    "pool": re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"),
    "volume": re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}"),
}
_ANF_EXAMPLE = (
    "/subscriptions/SUBSCRIPTION/resourceGroups/GROUP/providers/Microsoft.NetApp"
    "/netAppAccounts/ACCOUNT/capacityPools/POOL/volumes/VOLUME"
)
_ONTAP_PATH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,46}:[A-Za-z_][A-Za-z0-9_]{0,202}")
_SCHEDULE_NAMES = {
    "_10minutely": timedelta(minutes=10),
    "hourly": timedelta(hours=1),
    "daily": timedelta(days=1),
}
_MAX_QUOTED = 80


# -- quoting and character checks ---------------------------------------------------------


def _describe(value: object) -> str:
    """A value as problem lines show it: JSON-quoted scalars, "a list" or "a mapping"."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str) and len(value) > _MAX_QUOTED:
        value = value[:_MAX_QUOTED] + "..."
    if isinstance(value, timedelta) and value >= timedelta(0):
        value = format_duration(value)
    if value is not None and not isinstance(value, str | bool | int | float):
        value = str(value)
    text = json.dumps(value, ensure_ascii=False)
    # json.dumps leaves U+2028, U+0085 and friends alone; they would break the line.
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)


def _char_name(char: str) -> str:
    if char.isspace():
        return "whitespace"
    if char in "'\"`":
        return "quotes"
    if not char.isprintable():
        return "control characters"
    return _describe(char)


def _path_problem(path: str) -> str | None:
    """Why ``path`` is unfit for a map, an export block or an argv list; None if fit."""
    if not path.startswith("/"):
        return "must be absolute"
    bad = next((c for c in path if not _PATH_CHAR.fullmatch(c)), None)
    if bad is not None:
        return f"must not contain {_char_name(bad)}"
    if ".." in path.split("/"):
        return 'must not contain ".." segments'
    if len(path) > _MAX_PATH:
        return f"must be at most {_MAX_PATH} characters"
    return None


def _is_host(host: str) -> bool:
    """An IPv4 address or a DNS name of letters, digits, dots and inner hyphens."""
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return True
    return len(host) <= 253 and _DNS_NAME.fullmatch(host) is not None


def _is_ipv6(text: str) -> bool:
    """An IPv6 address without a zone index (``%eth0`` has no place in a map)."""
    if not re.fullmatch(r"[0-9A-Fa-f:.]+", text):
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


# -- small value types ------------------------------------------------------------------


class _TextValue:
    """A frozen value read from one string and written back by ``str()``."""

    __slots__ = ()
    _EXPECTED: ClassVar[str]
    _JSON_SCHEMA: ClassVar[dict[str, Any]]

    @classmethod
    def parse(cls, text: str) -> Self:
        """Read the value; raise ``ValueError`` with a one-line message if invalid."""
        raise NotImplementedError

    @classmethod
    def _validate(cls, value: object) -> Self:
        if isinstance(value, cls):
            return value
        if not isinstance(value, str):
            raise ValueError(f"{cls._EXPECTED}, got {_describe(value)}")
        return cls.parse(value)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.to_string_ser_schema(when_used="json-unless-none"),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return dict(cls._JSON_SCHEMA)


@dataclass(frozen=True, slots=True)
class Export(_TextValue):
    """An NFS export, ``HOST:/PATH``, safe to write into an autofs map.

    ``host`` is an IPv4 address, an IPv6 address (kept without brackets; ``str()`` adds
    them) or a DNS name. ``path`` is absolute and made of letters, digits and ``/._+@=~-``.
    """

    host: str
    path: str

    _EXPECTED: ClassVar[str] = "expected HOST:/PATH"
    _JSON_SCHEMA: ClassVar[dict[str, Any]] = {
        "type": "string",
        "description": "An NFS export, HOST:/PATH; HOST is an IPv4 address, a bracketed"
        " IPv6 address or a DNS name.",
        "examples": ["10.1.13.5:/crr-site1", "[fd00::5]:/vol", "nfs1.example.com:/export"],
    }

    def __str__(self) -> str:
        return f"{_bracketed(self.host)}:{self.path}"

    @classmethod
    def parse(cls, text: str) -> Export:
        got = _describe(text)
        if ":/" not in text:
            if ":" in text and not text.startswith("["):
                raise ValueError(f"expected HOST:/PATH with an absolute path, got {got}")
            raise ValueError(f"expected HOST:/PATH, got {got}")
        if text.startswith("["):
            end = text.find("]:/")
            host, path = text[1:end], text[end + 2 :]
            if end < 0 or not _is_ipv6(host):
                raise ValueError(f"expected [IPv6 address]:/PATH, got {got}")
        else:
            host, _, rest = text.partition(":/")
            path = "/" + rest
            if ":" in host and _is_ipv6(host):
                raise ValueError(
                    f"an IPv6 address needs brackets, such as [{host}]:/PATH, got {got}"
                )
            if not _is_host(host):
                raise ValueError(
                    "export host must be an IPv4 address, a bracketed IPv6 address or a DNS"
                    f" name, got {got}"
                )
        problem = _path_problem(path)
        if problem is not None:
            raise ValueError(f"export path {problem}, got {got}")
        return cls(host, path)


@dataclass(frozen=True, slots=True)
class HostPort(_TextValue):
    """A TCP endpoint, ``HOST:PORT``; an IPv6 host is bracketed: ``[::1]:8741``."""

    host: str
    port: int

    _EXPECTED: ClassVar[str] = "expected HOST:PORT such as 127.0.0.1:8741"
    _JSON_SCHEMA: ClassVar[dict[str, Any]] = {
        "type": "string",
        "description": "HOST:PORT; HOST is an IPv4 address, a bracketed IPv6 address or a"
        " DNS name.",
        "examples": ["127.0.0.1:8741", "[::1]:8741"],
    }

    def __str__(self) -> str:
        return f"{_bracketed(self.host)}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> HostPort:
        host, _, port = text.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
            host_ok = _is_ipv6(host)
        else:
            host_ok = _is_host(host)
        if not host_ok or not re.fullmatch(r"[0-9]{1,5}", port) or not 0 < int(port) < 65536:
            raise ValueError(f"{cls._EXPECTED}, got {_describe(text)}")
        return cls(host, int(port))


@dataclass(frozen=True, slots=True)
class AnfVolumeId(_TextValue):
    """The Azure resource id of an Azure NetApp Files volume.

    Azure compares resource ids without regard to case; so does ``same_volume``.
    """

    subscription: str
    resource_group: str
    account: str
    pool: str
    volume: str

    _EXPECTED: ClassVar[str] = f"expected an ANF volume resource id such as {_ANF_EXAMPLE}"
    _JSON_SCHEMA: ClassVar[dict[str, Any]] = {
        "type": "string",
        "description": "Resource id of an Azure NetApp Files volume.",
        "examples": [_ANF_EXAMPLE],
    }

    def __str__(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.NetApp/netAppAccounts/{self.account}"
            f"/capacityPools/{self.pool}/volumes/{self.volume}"
        )

    def same_volume(self, other: AnfVolumeId) -> bool:
        return str(self).lower() == str(other).lower()

    @classmethod
    def parse(cls, text: str) -> AnfVolumeId:
        match = _ANF_ID.fullmatch(text)
        if match is None:
            raise ValueError(f"{cls._EXPECTED}, got {_describe(text)}")
        parts = match.groupdict()
        if not _GUID.fullmatch(parts["subscription"]):
            raise ValueError(f"subscription must be a GUID, got {_describe(text)}")
        for part, pattern in _ANF_PARTS.items():
            if not pattern.fullmatch(parts[part]):
                label = part.replace("_", " ")
                what = f"{label} name {_describe(parts[part])} is not valid"
                raise ValueError(f"{what}, got {_describe(text)}")
        return cls(**parts)


@dataclass(frozen=True, slots=True)
class StoreUrl(_TextValue):
    """Where the journal and desired state live: ``sqlite:///ABS/PATH`` or ``etcd://HOST:PORT``.

    Exactly one of ``sqlite_path`` and ``etcd_endpoint`` is set, matching ``scheme``.
    """

    scheme: Literal["sqlite", "etcd"]
    sqlite_path: Path | None = None
    etcd_endpoint: HostPort | None = None

    _EXPECTED: ClassVar[str] = "expected sqlite:///ABSOLUTE/PATH or etcd://HOST:PORT"
    _JSON_SCHEMA: ClassVar[dict[str, Any]] = {
        "type": "string",
        "description": "sqlite:///ABSOLUTE/PATH, or etcd://HOST:PORT (accepted, not yet used).",
        "examples": ["sqlite:///var/lib/nfs-failover/state.db", "etcd://10.0.0.7:2379"],
    }

    def __str__(self) -> str:
        if self.scheme == "sqlite":
            return f"sqlite://{self.sqlite_path}"
        return f"etcd://{self.etcd_endpoint}"

    @classmethod
    def parse(cls, text: str) -> StoreUrl:
        if "@" in text:
            # user:password@host would put a secret into the problem line: never echo it.
            raise ValueError(f"{cls._EXPECTED}; credentials in the URL are not supported")
        if text.startswith("sqlite://"):
            path = text.removeprefix("sqlite://")
            problem = _path_problem(path)
            if problem is not None:
                raise ValueError(f"sqlite path {problem}, got {_describe(text)}")
            return cls("sqlite", sqlite_path=Path(path))
        if text.startswith("etcd://"):
            try:
                endpoint = HostPort.parse(text.removeprefix("etcd://"))
            except ValueError:
                raise ValueError(f"{cls._EXPECTED}, got {_describe(text)}") from None
            return cls("etcd", etcd_endpoint=endpoint)
        raise ValueError(f"{cls._EXPECTED}, got {_describe(text)}")


# -- annotated field types --------------------------------------------------------------


def _duration(minimum: timedelta | None = None, whole_seconds: bool = False) -> PlainValidator:
    """A validator for a duration field, with an optional exclusive lower bound."""

    def check(value: object) -> timedelta:
        duration = _to_duration(value, DURATION_HINT)
        if minimum is not None and duration <= minimum:
            raise ValueError(
                f"must be more than {format_duration(minimum)}, got {_describe(value)}"
            )
        if whole_seconds and duration % timedelta(seconds=1):
            raise ValueError(f"must be a whole number of seconds, got {_describe(value)}")
        return duration

    return PlainValidator(check)


_DURATION_SCHEMA = WithJsonSchema(
    {
        "anyOf": [
            {"type": "string", "pattern": r"^(\d+(\.\d+)?(d|h|m|s|ms))+$|^\d+(\.\d+)?$"},
            {"type": "number", "minimum": 0},
        ],
        "description": "A duration: 500ms, 10s, 5m, 1h, 1d, combinations such as 1m30s,"
        " or a plain number of seconds.",
    }
)
_DURATION_OUT = PlainSerializer(format_duration, return_type=str, when_used="json")

PositiveDuration = Annotated[timedelta, _duration(timedelta(0)), _DURATION_OUT, _DURATION_SCHEMA]
WholeSeconds = Annotated[
    timedelta, _duration(timedelta(0), whole_seconds=True), _DURATION_OUT, _DURATION_SCHEMA
]


def _to_duration(value: object, hint: str) -> timedelta:
    """A timedelta as is (from Python callers), or text and numbers through parse_duration."""
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise ValueError(f"a duration must not be negative, got -{format_duration(-value)}")
        return value
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ValueError(f"{hint}, got {_describe(value)}")
    return parse_duration(value)


def _check_schedule(value: object) -> timedelta:
    if isinstance(value, str) and value in _SCHEDULE_NAMES:
        return _SCHEDULE_NAMES[value]
    hint = "expected a duration from 1s to 1d or one of _10minutely, hourly, daily"
    try:
        duration = _to_duration(value, hint)
    except ValueError:
        raise ValueError(f"{hint}, got {_describe(value)}") from None
    if not timedelta(seconds=1) <= duration <= timedelta(days=1):
        raise ValueError(f"{hint}, got {_describe(value)}")
    return duration


Schedule = Annotated[
    timedelta,
    PlainValidator(_check_schedule),
    _DURATION_OUT,
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "enum": list(_SCHEDULE_NAMES)},
                _DURATION_SCHEMA.json_schema or {},
            ],
            "description": "Replication interval: a duration from 1s to 1d, or one of the ANF"
            " schedule names _10minutely (10m), hourly (1h), daily (1d).",
        }
    ),
]


def _pattern(regex: re.Pattern[str], expected: str) -> PlainValidator:
    def check(value: object) -> str:
        if not isinstance(value, str) or not regex.fullmatch(value):
            raise ValueError(f"expected {expected}, got {_describe(value)}")
        return value

    return PlainValidator(check)


def _string_schema(regex: re.Pattern[str]) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "pattern": f"^{regex.pattern}$"})


Name = Annotated[
    str,
    _pattern(
        _NAME,
        'lowercase letters, digits, "_" and "-" (starting with a letter or digit, at most 63)',
    ),
    _string_schema(_NAME),
]
MapKey = Annotated[
    str,
    _pattern(_MAP_KEY, 'an autofs key of letters, digits, ".", "_" and "-"'),
    _string_schema(_MAP_KEY),
]
Zone = Annotated[
    str,
    _pattern(_ZONE, 'a zone name of letters, digits, ".", "_" and "-"'),
    _string_schema(_ZONE),
]


def _check_host_name(value: object) -> str:
    if not isinstance(value, str) or not (_is_host(value) or _is_ipv6(value)):
        raise ValueError(f"expected a DNS name or an IP address, got {_describe(value)}")
    return value


HostName = Annotated[
    str,
    PlainValidator(_check_host_name),
    WithJsonSchema({"type": "string", "description": "A DNS name or an IP address."}),
]


def _check_absolute_path(value: object) -> Path:
    if isinstance(value, PurePath):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError(f"expected an absolute path, got {_describe(value)}")
    problem = _path_problem(value)
    if problem == "must be absolute":
        raise ValueError(f"expected an absolute path, got {_describe(value)}")
    if problem is not None:
        raise ValueError(f"path {problem}, got {_describe(value)}")
    return Path(value)


def _check_secret_path(value: object) -> Path:
    # The user may have pasted the secret itself here: never echo the value.
    if isinstance(value, PurePath):
        value = str(value)
    problem = _path_problem(value) if isinstance(value, str) else "must be absolute"
    if problem == "must be absolute":
        raise ValueError(
            "expected the absolute path of the file holding the secret (value not shown)"
        )
    if problem is not None:
        raise ValueError(f"path {problem} (value not shown)")
    return Path(str(value))


_PATH_SCHEMA = WithJsonSchema({"type": "string", "format": "path", "pattern": "^/"})
AbsolutePath = Annotated[Path, PlainValidator(_check_absolute_path), _PATH_SCHEMA]


def _check_https_url(value: object) -> str:
    if isinstance(value, str) and re.fullmatch(r"https://[A-Za-z0-9.-]+(:\d{1,5})?/?", value):
        return value.rstrip("/")
    raise ValueError(f"expected an https://HOST[:PORT] URL, got {_describe(value)}")


HttpsUrl = Annotated[
    str,
    PlainValidator(_check_https_url),
    WithJsonSchema({"type": "string", "examples": ["https://management.azure.com"]}),
]
SecretFilePath = Annotated[Path, PlainValidator(_check_secret_path), _PATH_SCHEMA]


def _check_mount_options(value: object) -> str:
    got = _describe(value)
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a comma-separated list of NFS mount options, got {got}")
    if value.startswith("-"):
        raise ValueError(f'mount options must not start with "-", got {got}')
    bad = next((c for c in value if not _OPTION_CHAR.fullmatch(c)), None)
    if bad is not None:
        raise ValueError(f"mount options must not contain {_char_name(bad)}, got {got}")
    for option in value.split(","):
        if not option:
            raise ValueError(f"mount options must not contain an empty option, got {got}")
        if not _OPTION.fullmatch(option):
            raise ValueError(f"expected NAME or NAME=VALUE, got {_describe(option)} in {got}")
        if option.split("=")[0] == "fstype":
            raise ValueError(f"fstype is set by nfs-failover itself, got {got}")
    return value


MountOptions = Annotated[
    str,
    PlainValidator(_check_mount_options),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^[A-Za-z0-9_][A-Za-z0-9_.:/@+=,-]*$",
            "examples": ["rw,nosuid,hard,tcp,timeo=60"],
        }
    ),
]


def _choice(enum: type[_E]) -> BeforeValidator:
    """Accept an enum's values only, with a message that lists them."""

    def check(value: object) -> object:
        if isinstance(value, enum):
            return value
        if isinstance(value, str) and value in enum._value2member_map_:
            return enum(value)
        choices = ", ".join(_describe(member.value) for member in enum)
        raise ValueError(f"expected one of {choices}, got {_describe(value)}")

    return BeforeValidator(check)


class _Problems(ValueError):
    """Problems found by one cross-field check, each at a location below the checked value."""

    def __init__(self, problems: Sequence[tuple[Loc, str]]) -> None:
        super().__init__("; ".join(f"{_format_loc(loc)}: {text}" for loc, text in problems))
        self.problems = list(problems)


def _report(problems: Sequence[tuple[Loc, str]]) -> None:
    if problems:
        raise _Problems(problems)


# -- policy ------------------------------------------------------------------------------


class Mode(StrEnum):
    """How clients use a volume."""

    READ_WRITE = "read-write"
    READ_ONLY = "read-only"


class Failback(StrEnum):
    """Who decides to fail back once the source is healthy again."""

    MANUAL = "manual"
    AUTOMATIC = "automatic"


def _json_default(value: object) -> object:
    """A default as a user would write it in the file (``20m``, not ``PT20M``)."""
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, _TextValue | PurePath):
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


_POLICY_DOCS = {
    "probe_interval": "How often each endpoint is probed.",
    "probe_timeout": "Deadline of one probe; a probe without an answer by then has failed.",
    "failover_after": "Grace period: how long the source must stay down before failover."
    " Keep it well above a blip.",
    "recover_after": "How long an endpoint must keep answering before it counts as up again.",
    "max_lag": "RPO limit: a read-write volume fails over on its own only if the replication"
    " lag is within it; otherwise it refuses, says why, and waits for `failover --force`.",
    "failback": "manual: fail back only on command; automatic: once the source is healthy"
    " and resynced.",
    "read_only_fallback": "For a read-write volume: list the read-only destination after the"
    " source in the autofs map, so clients can still read before a failover.",
    "quorum": "How many vantage points (agents) must see the source down before it is down.",
    "transfer_wait": "How long failback waits for the final transfer before giving up.",
}
# (subject, reference): the subject duration must be at least the reference duration.
_POLICY_ORDER = (
    ("failover_after", "probe_interval"),
    ("failover_after", "probe_timeout"),
    ("recover_after", "probe_interval"),
)


class Policy(_Model):
    """When to fail over and fail back: the guardrails."""

    probe_interval: PositiveDuration = Field(
        timedelta(seconds=1), description=_POLICY_DOCS["probe_interval"]
    )
    probe_timeout: PositiveDuration = Field(
        timedelta(seconds=2), description=_POLICY_DOCS["probe_timeout"]
    )
    failover_after: PositiveDuration = Field(
        timedelta(seconds=60), description=_POLICY_DOCS["failover_after"]
    )
    recover_after: PositiveDuration = Field(
        timedelta(seconds=30), description=_POLICY_DOCS["recover_after"]
    )
    max_lag: PositiveDuration = Field(timedelta(minutes=20), description=_POLICY_DOCS["max_lag"])
    failback: Annotated[Failback, _choice(Failback)] = Field(
        Failback.MANUAL, description=_POLICY_DOCS["failback"]
    )
    read_only_fallback: bool = Field(
        False, strict=True, description=_POLICY_DOCS["read_only_fallback"]
    )
    quorum: int = Field(1, strict=True, ge=1, description=_POLICY_DOCS["quorum"])
    transfer_wait: PositiveDuration = Field(
        timedelta(minutes=5), description=_POLICY_DOCS["transfer_wait"]
    )

    @model_validator(mode="after")
    def _check_order(self) -> Self:
        _report([((subject,), text) for subject, _, text in _policy_conflicts(self)])
        return self


class PolicyOverride(_Model):
    """Per-volume changes to the global policy; a field left out keeps the global value."""

    probe_interval: PositiveDuration | None = Field(
        None, description=_POLICY_DOCS["probe_interval"]
    )
    probe_timeout: PositiveDuration | None = Field(None, description=_POLICY_DOCS["probe_timeout"])
    failover_after: PositiveDuration | None = Field(
        None, description=_POLICY_DOCS["failover_after"]
    )
    recover_after: PositiveDuration | None = Field(None, description=_POLICY_DOCS["recover_after"])
    max_lag: PositiveDuration | None = Field(None, description=_POLICY_DOCS["max_lag"])
    failback: Annotated[Failback, _choice(Failback)] | None = Field(
        None, description=_POLICY_DOCS["failback"]
    )
    read_only_fallback: bool | None = Field(
        None, strict=True, description=_POLICY_DOCS["read_only_fallback"]
    )
    quorum: int | None = Field(None, strict=True, ge=1, description=_POLICY_DOCS["quorum"])
    transfer_wait: PositiveDuration | None = Field(None, description=_POLICY_DOCS["transfer_wait"])

    def apply_to(self, policy: Policy) -> Policy:
        """``policy`` with this override's fields replaced."""
        return policy.model_copy(update=self.model_dump(exclude_none=True))


def _policy_conflicts(policy: Policy) -> list[tuple[str, str, str]]:
    """(subject, reference, message) for every ordering rule the policy breaks."""
    conflicts = []
    for subject, reference in _POLICY_ORDER:
        low: timedelta = getattr(policy, reference)
        value: timedelta = getattr(policy, subject)
        if value < low:
            text = f"must be at least {reference} ({format_duration(low)})"
            conflicts.append((subject, reference, f"{text}, got {format_duration(value)}"))
    return conflicts


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


class LocalReplication(_Model):
    """The embedded engine: two NFS-Ganesha export directories, copied with rsync."""

    provider: Literal["local"] = Field(description="Replication engine: local.")
    source_path: AbsolutePath = Field(description="Directory exported as the source replica.")
    destination_path: AbsolutePath = Field(
        description="Directory exported (read-only while mirrored) as the destination replica."
    )
    schedule: Schedule = Field(
        timedelta(minutes=10),
        description="Transfer interval: a duration from 1s to 1d, or _10minutely, hourly, daily.",
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
        source = PurePosixPath(self.source_path)
        destination = PurePosixPath(self.destination_path)
        if source == destination or source in destination.parents or destination in source.parents:
            _report([(("destination_path",), f'must not overlap source_path ("{source}")')])
        return self


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
        if self.source.same_volume(self.destination):
            _report([(("destination",), "must not be the same volume as source")])
        return self


def _check_relationship(value: object) -> str:
    if isinstance(value, str) and (_GUID.fullmatch(value) or _ONTAP_PATH.fullmatch(value)):
        return value
    raise ValueError(
        'expected a SnapMirror relationship UUID or a destination path "svm:volume",'
        f" got {_describe(value)}"
    )


class OntapReplication(_Model):
    """NetApp ONTAP SnapMirror through the ONTAP REST API."""

    provider: Literal["ontap"] = Field(description="Replication engine: ontap.")
    cluster: HostName = Field(description="Cluster management address (DNS name or IP).")
    relationship: Annotated[
        str,
        PlainValidator(_check_relationship),
        WithJsonSchema({"type": "string", "examples": ["svm_dr:crr_dest"]}),
    ] = Field(description='SnapMirror relationship: its UUID or destination path "svm:volume".')
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


def _check_replicas(replicas: tuple[Replica, ...]) -> tuple[Replica, ...]:
    if len(replicas) != 2:
        raise ValueError(
            f"expected exactly 2 replicas (source first, destination second), got {len(replicas)}"
        )
    problems: list[tuple[Loc, str]] = []
    for index, replica in enumerate(replicas):
        for earlier in range(index):
            if replicas[earlier].name == replica.name:
                text = f"duplicate replica name {_describe(replica.name)}"
                problems.append(((index, "name"), text))
            if replicas[earlier].export == replica.export:
                problems.append(((index, "export"), f"same export as replicas[{earlier}]"))
    _report(problems)
    return replicas


class Volume(_Model):
    """A replicated pair of NFS volumes that clients see as one autofs key."""

    name: Name = Field(description="Name of the volume, unique in the file.")
    mode: Annotated[Mode, _choice(Mode)] = Field(
        description="read-write: failover breaks replication and fences the old source;"
        " read-only: failover only steers clients."
    )
    mount: MountSettings = Field(
        default_factory=MountSettings, description="How clients mount the volume."
    )
    replicas: Annotated[tuple[Replica, ...], AfterValidator(_check_replicas)] = Field(
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
        _report(_mode_conflicts(self.mode, self.mount.options) + _map_problems(self))
        return self


def _map_problems(volume: Volume) -> list[tuple[Loc, str]]:
    """What the agent would refuse when it renders the volume's map entry, found at load:
    the entry with every replica (the longest one the agent ever writes)."""
    options = ["fstype=nfs", *(o for o in volume.mount.options.split(",") if o)]
    replicas = [(map_host(r.export.host), r.export.path) for r in volume.replicas]
    try:
        preference_entry(volume.map_key, options, replicas)
    except MapValueError as exc:
        return [(("mount", "options"), str(exc))]
    return []


def _mode_conflicts(mode: Mode, options: str) -> list[tuple[Loc, str]]:
    clashing = "rw" if mode is Mode.READ_ONLY else "ro"
    if clashing in options.split(","):
        return [(("mount", "options"), f'"{clashing}" contradicts mode {mode.value}')]
    return []


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
        problems: list[tuple[Loc, str]] = []
        if self.mount_root == Path("/"):
            problems.append((("mount_root",), 'must not be "/"'))
        if self.master_dropin.suffix != ".autofs":
            problems.append((("master_dropin",), 'must end in ".autofs" or autofs ignores it'))
        if self.map_file == self.master_dropin:
            problems.append((("map_file",), "must not be the same file as master_dropin"))
        for field in ("master_dropin", "map_file"):
            if self.mount_root in getattr(self, field).parents:
                problems.append(((field,), "must not be inside mount_root"))
            elif foreign_file(self.under_root(getattr(self, field))):
                problems.append(
                    (
                        (field,),
                        "exists and was not written by nfs-failover; it would be overwritten",
                    )
                )
        _report(problems)
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


def _check_argv_item(value: str) -> str:
    if any(not c.isprintable() for c in value):
        raise ValueError("must not contain control characters")
    try:
        parsed = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(value)]
    except ValueError:
        raise ValueError(
            f"unbalanced braces (write {{{{ and }}}} for literal ones), got {_describe(value)}"
        ) from None
    fields = [field for field, _, _ in parsed if field is not None]
    for field, spec, conversion in parsed:
        if field is not None and (spec or conversion):
            shown = (
                "{"
                + field
                + (f"!{conversion}" if conversion else "")
                + (f":{spec}" if spec else "")
                + "}"
            )
            raise ValueError(
                f"placeholder {_describe(shown)} may not have a format or conversion; "
                f"write {{{field}}}"
            )
    for field in fields:
        if field not in HOOK_PLACEHOLDERS:
            known = ", ".join(f"{{{name}}}" for name in HOOK_PLACEHOLDERS)
            raise ValueError(f"unknown placeholder {_describe('{' + field + '}')}; known: {known}")
    return value


def _check_argv(argv: tuple[str, ...]) -> tuple[str, ...]:
    if not argv:
        raise ValueError("expected a program and its arguments, got an empty list")
    if not argv[0].startswith("/"):
        _report([((0,), f"expected the absolute path of the program, got {_describe(argv[0])}")])
    return argv


def _hook_shape(value: object) -> object:
    if isinstance(value, str):
        raise ValueError(
            'expected an argv list such as [/usr/local/bin/quiesce, --volume, "{volume}"],'
            " not a shell command string"
        )
    if isinstance(value, list | tuple):
        return {"argv": value}
    return value


class Hook(_Model):
    """A program run before or after a failover or failback; never through a shell."""

    argv: Annotated[
        tuple[Annotated[str, AfterValidator(_check_argv_item)], ...], AfterValidator(_check_argv)
    ] = Field(
        description="Program (absolute path) and arguments. Placeholders: "
        + ", ".join(f"{{{name}}}" for name in HOOK_PLACEHOLDERS)
        + " (from_/to_ name the replica clients leave and the one they go to)."
    )
    timeout: PositiveDuration | None = Field(
        None, description="Deadline for this hook; defaults to hooks.timeout."
    )

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, value: object) -> object:
        # Hooks are usually written as a bare argv list; the mapping form adds a timeout.
        return _hook_shape(value)


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
        description="Journal and desired state: sqlite:///ABSOLUTE/PATH or etcd://HOST:PORT.",
    )
    api: ApiSettings = Field(default_factory=ApiSettings, description="The HTTP API.")
    hooks: Hooks = Field(default_factory=Hooks, description="Programs run around transitions.")

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

    def effective_policy(self, volume: Volume | str) -> Policy:
        """The global policy with the volume's overrides applied."""
        found = self.volume(volume) if isinstance(volume, str) else volume
        return found.policy.apply_to(self.policy)

    @model_validator(mode="after")
    def _check_across_volumes(self) -> Self:
        _report(
            _name_conflicts(self.volumes)
            + _export_conflicts(self.volumes)
            + [p for i, v in enumerate(self.volumes) for p in _volume_policy_conflicts(self, i, v)]
        )
        return self


def _name_conflicts(volumes: Sequence[Volume]) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    names: dict[str, int] = {}
    keys: dict[str, int] = {}
    for index, volume in enumerate(volumes):
        if volume.name in names:
            text = f"duplicate volume name {_describe(volume.name)}"
            problems.append(
                (("volumes", index, "name"), f"{text} (also volumes[{names[volume.name]}])")
            )
        elif volume.map_key in keys:
            where: Loc = ("mount", "map_key") if volume.mount.map_key else ("name",)
            text = f"map key {_describe(volume.map_key)} already used"
            problems.append(
                (("volumes", index, *where), f"{text} by volumes[{keys[volume.map_key]}]")
            )
        names.setdefault(volume.name, index)
        keys.setdefault(volume.map_key, index)
    return problems


def _export_conflicts(volumes: Sequence[Volume]) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    seen: dict[Export, Loc] = {}
    for index, volume in enumerate(volumes):
        for number, replica in enumerate(volume.replicas):
            loc: Loc = ("volumes", index, "replicas", number)
            first = seen.setdefault(replica.export, loc)
            if first[1] != index:
                problems.append(((*loc, "export"), f"export already used by {_format_loc(first)}"))
    return problems


def _volume_policy_conflicts(config: Config, index: int, volume: Volume) -> list[tuple[Loc, str]]:
    """Problems the volume's override creates (the global policy is checked on its own)."""
    policy = config.effective_policy(volume)
    overridden = volume.policy.model_fields_set
    problems: list[tuple[Loc, str]] = []
    for subject, reference, text in _policy_conflicts(policy):
        if subject in overridden:
            problems.append((("volumes", index, "policy", subject), text))
        elif reference in overridden:
            value = format_duration(getattr(policy, subject))
            low = format_duration(getattr(policy, reference))
            shorter = f"{subject} ({value}) would be shorter than {reference} ({low})"
            problems.append((("volumes", index, "policy", reference), shorter))
    replication = volume.replication
    if isinstance(replication, LocalReplication) and replication.schedule > policy.max_lag:
        text = (
            f"must not be longer than max_lag ({format_duration(policy.max_lag)}), or every"
            f" failover would be refused for lag, got {format_duration(replication.schedule)}"
        )
        problems.append((("volumes", index, "replication", "schedule"), text))
    return problems


# -- loading -----------------------------------------------------------------------------

Position = tuple[int, int]


@dataclass(frozen=True)
class _Problem:
    position: Position
    loc: Loc
    text: str


def load_config(path: str | Path) -> Config:
    """Read, parse and validate a config file.

    Raises ``ConfigError`` whose ``problems`` are one line each, ``FILE: FIELD: message``,
    where FILE is ``path`` as given; all problems found are reported at once, in file order.
    """
    source = str(path)
    try:
        raw = files.read_regular(Path(path), MAX_FILE_BYTES + 1)
    except OSError as exc:
        reason = (exc.strerror or type(exc).__name__).lower()
        raise ConfigError([f"{source}: cannot read the file: {reason}"]) from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError([f"{source}: too large (more than {MAX_FILE_BYTES} bytes)"])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{source}: not UTF-8 text (bad byte at offset {exc.start})"]) from None
    return parse_config(text, source)


def parse_config(text: str, source: str = "<config>") -> Config:
    """Parse and validate config text; ``source`` names it in problem lines."""
    data, marks, problems = _parse_yaml(text, source)
    if data is None and not problems:
        raise ConfigError([f"{source}: the file is empty; expected a mapping with volumes"])
    if not isinstance(data, dict):
        if problems:
            raise ConfigError([_line(source, p) for p in problems])
        kind = _describe(data)
        raise ConfigError([f"{source}: expected a mapping of settings at the top, got {kind}"])
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems += _validation_problems(exc, data, marks)
    if problems:
        problems.sort(key=lambda problem: problem.position)
        raise ConfigError([_line(source, p) for p in problems])
    config._source = source
    return config


def summary(config: Config, source: str | Path | None = None) -> str:
    """One line describing the config, led by its file name when known.

    For example ``crr.yaml: 2 volumes (1 read-write, 1 read-only), 4 replicas, providers:
    anf, local; failover after 60s, max lag 20m``; a value that volumes override differently
    is shown as a range (``10s to 60s``).
    """
    name = str(source) if source is not None else config.source
    volumes = config.volumes
    modes = [
        f"{count} {mode.value}"
        for mode in Mode
        if (count := sum(volume.mode is mode for volume in volumes))
    ]
    providers = sorted({volume.replication.provider for volume in volumes})
    policies = [config.effective_policy(volume) for volume in volumes]
    replicas = sum(len(volume.replicas) for volume in volumes)
    text = (
        f"{_count(len(volumes), 'volume')} ({', '.join(modes)}), {_count(replicas, 'replica')},"
        f" {'provider' if len(providers) == 1 else 'providers'}: {', '.join(providers)};"
        f" failover after {_span(p.failover_after for p in policies)},"
        f" max lag {_span(p.max_lag for p in policies)}"
    )
    return f"{name}: {text}" if name else text


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _span(values: Iterable[timedelta]) -> str:
    ordered = sorted(set(values))
    if len(ordered) == 1:
        return format_duration(ordered[0])
    return f"{format_duration(ordered[0])} to {format_duration(ordered[-1])}"


def _line(source: str, problem: _Problem) -> str:
    where = _format_loc(problem.loc)
    return f"{source}: {where}: {problem.text}" if where else f"{source}: {problem.text}"


def _format_loc(loc: Loc) -> str:
    """``("volumes", 0, "replicas")`` -> ``volumes[0].replicas``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", part):
            out += f".{part}" if out else part
        else:
            out += f"[{_describe(part)}]"
    return out


# -- YAML --------------------------------------------------------------------------------


class _Marks:
    """Where each key and item of the file starts, and where each mapping ends.

    Problems sort by these positions; a missing field sorts at the end of its mapping.
    """

    def __init__(self) -> None:
        self.starts: dict[Loc, Position] = {}
        self.ends: dict[Loc, Position] = {}

    def position(self, loc: Loc) -> Position:
        if loc not in self.starts and loc[:-1] in self.ends:
            return self.ends[loc[:-1]]
        for length in range(len(loc), -1, -1):
            if loc[:length] in self.starts:
                return self.starts[loc[:length]]
        return (0, 0)


def _parse_yaml(text: str, source: str) -> tuple[object, _Marks, list[_Problem]]:
    """The data, the positions of its parts, and duplicate-key problems.

    Raises ``ConfigError`` for text that is not YAML. Duplicate keys are found on the
    composed node tree rather than while constructing, so each is reported with its path.
    """
    marks = _Marks()
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        if node is None:
            return None, marks, []
        problems: list[_Problem] = []
        marks.starts[()] = _position(node.start_mark)
        _walk(node, (), marks, problems, set())
        return loader.construct_document(node), marks, problems
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([_yaml_problem(source, exc)]) from None
    except yaml.reader.ReaderError as exc:
        detail = f"unacceptable character #x{exc.character:04x} at offset {exc.position}"
        raise ConfigError([f"{source}: invalid YAML: {detail}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: invalid YAML: {_one_line(str(exc))}"]) from None
    except RecursionError:
        raise ConfigError([f"{source}: invalid YAML: nested too deeply"]) from None
    except (ValueError, OverflowError) as exc:  # a number Python refuses (4,300+ digits)
        raise ConfigError([f"{source}: invalid YAML: {_one_line(str(exc))[:200]}"]) from None
    finally:
        if loader is not None:
            loader.dispose()


def _yaml_problem(source: str, exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    what = _one_line(exc.problem or exc.context or "cannot parse")
    if exc.context and what.startswith("but "):
        what = f"{_one_line(exc.context)}, {what}"
    if mark is None:
        return f"{source}: invalid YAML: {what}"
    return f"{source}: {mark.line + 1}:{mark.column + 1}: invalid YAML: {what}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _position(mark: yaml.Mark) -> Position:
    return (mark.line + 1, mark.column + 1)


def _walk(
    node: yaml.Node, loc: Loc, marks: _Marks, problems: list[_Problem], seen: set[int]
) -> None:
    # Aliases share nodes: walk each once, so a "billion laughs" file stays cheap.
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            marks.starts.setdefault((*loc, index), _position(item.start_mark))
            _walk(item, (*loc, index), marks, problems, seen)
    elif isinstance(node, yaml.MappingNode):
        marks.ends.setdefault(loc, _position(node.end_mark))
        keys: dict[str, Position] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            key = key_node.value
            where = _position(key_node.start_mark)
            if key in keys:
                text = f"duplicate key (first on line {keys[key][0]})"
                problems.append(_Problem(where, (*loc, key), text))
                continue
            keys[key] = where
            marks.starts.setdefault((*loc, key), where)
            _walk(value_node, (*loc, key), marks, problems, seen)


# -- pydantic errors to problem lines ----------------------------------------------------

_TYPE_MESSAGES = {
    "missing": "missing",
    "extra_forbidden": "unknown field",
    "invalid_key": "unknown field",
    "string_type": "expected a string, got {got}",
    "int_type": "expected a whole number, got {got}",
    "int_parsing": "expected a whole number, got {got}",
    "int_from_float": "expected a whole number, got {got}",
    "bool_type": "expected true or false, got {got}",
    "bool_parsing": "expected true or false, got {got}",
    "list_type": "expected a list, got {got}",
    "tuple_type": "expected a list, got {got}",
    "dict_type": "expected a mapping, got {got}",
    "model_type": "expected a mapping, got {got}",
    "model_attributes_type": "expected a mapping, got {got}",
    "greater_than_equal": "must be at least {ge}, got {got}",
    "greater_than": "must be more than {gt}, got {got}",
}


def _validation_problems(error: ValidationError, data: object, marks: _Marks) -> list[_Problem]:
    problems = []
    for item in error.errors(include_url=False):
        for raw_loc, text in _messages(item):
            loc = _clean_loc(raw_loc, data)
            problems.append(_Problem(marks.position(loc), loc, text))
    return problems


def _messages(item: ErrorDetails) -> list[tuple[Loc, str]]:
    """(raw pydantic location, message) pairs for one pydantic error."""
    loc: Loc = tuple(item["loc"])
    kind = item["type"]
    ctx = item.get("ctx") or {}
    got = _describe(item.get("input"))
    if kind == "value_error":
        cause = ctx.get("error")
        if isinstance(cause, _Problems):
            return [((*loc, *sub), text) for sub, text in cause.problems]
        return [(loc, _one_line(str(cause)))]
    if kind == "union_tag_invalid":
        tags = ", ".join(f'"{tag}"' for tag in re.findall(r"'([^']*)'", ctx["expected_tags"]))
        field = str(ctx["discriminator"]).strip("'")
        value = item["input"].get(field) if isinstance(item["input"], dict) else None
        return [((*loc, field), f"expected one of {tags}, got {_describe(value)}")]
    if kind == "union_tag_not_found":
        return [((*loc, str(ctx["discriminator"]).strip("'")), "missing")]
    if kind in _TYPE_MESSAGES:
        return [(loc, _TYPE_MESSAGES[kind].format(got=got, **ctx))]
    text = _one_line(item["msg"])
    return [(loc, f"{text[:1].lower()}{text[1:]}, got {got}")]


def _clean_loc(loc: Loc, data: object) -> Loc:
    """Drop the segments pydantic adds that are not in the file: union tags, wrapper fields.

    Walks the input alongside the location; a name that the input does not have at that
    point is pydantic's own unless it is the last segment (a missing or unknown field).
    """
    out: list[str | int] = []
    node: object = data
    for index, part in enumerate(loc):
        if isinstance(node, dict):
            if part not in node and index < len(loc) - 1:
                continue  # a union tag such as "anf"
            node = node.get(part)
            out.append(str(part))  # a YAML key such as 1 is a name here, not an index
        elif isinstance(node, list) and isinstance(part, str):
            continue  # a field wrapping a list as written, such as a hook's argv
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            out.append(part)
        else:
            node = None
            out.append(part)
    return tuple(out)
