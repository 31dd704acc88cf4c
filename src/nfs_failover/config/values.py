"""The small value types of the config file, each read from one string and written back.

``Export`` (``HOST:/PATH``), ``HostPort``, ``AnfVolumeId`` and ``StoreUrl`` are used well
beyond the config: the probe, the API, the store and the providers take them as they are.
They are parsed here by hand rather than with pydantic's network and URL types because
their text ends up in autofs maps, Ganesha export blocks and argv lists: hosts and paths
are held to a conservative character set so that no value can corrupt a map or smuggle
options into it, a store URL's credentials are never echoed, and every refusal is one line.
``Mode`` and ``Failback`` are the two choices the file spells as words. Durations are
``datetime.timedelta``, read and written by ``nfs_failover.durations``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from nfs_failover.config.problems import char_name, describe

__all__ = [
    "GUID",
    "AnfVolumeId",
    "Export",
    "Failback",
    "HostPort",
    "Mode",
    "StoreUrl",
    "TextValue",
    "is_host",
    "is_ipv6",
    "path_problem",
]

_DNS_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")
# Paths land in autofs maps, Ganesha export blocks and rsync argv: a conservative set.
_PATH_CHAR = re.compile(r"[A-Za-z0-9/._+@=~-]")
_MAX_PATH = 1024
GUID = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
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


# -- hosts and paths ---------------------------------------------------------------------


def path_problem(path: str) -> str | None:
    """Why ``path`` is unfit for a map, an export block or an argv list; None if fit."""
    if not path.startswith("/"):
        return "must be absolute"
    bad = next((c for c in path if not _PATH_CHAR.fullmatch(c)), None)
    if bad is not None:
        return f"must not contain {char_name(bad)}"
    if ".." in path.split("/"):
        return 'must not contain ".." segments'
    if len(path) > _MAX_PATH:
        return f"must be at most {_MAX_PATH} characters"
    return None


def is_host(host: str) -> bool:
    """An IPv4 address or a DNS name of letters, digits, dots and inner hyphens."""
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return True
    return len(host) <= 253 and _DNS_NAME.fullmatch(host) is not None


def is_ipv6(text: str) -> bool:
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


# -- small value types -------------------------------------------------------------------


class TextValue:
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
            raise ValueError(f"{cls._EXPECTED}, got {describe(value)}")
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
class Export(TextValue):
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
        got = describe(text)
        if ":/" not in text:
            if ":" in text and not text.startswith("["):
                raise ValueError(f"expected HOST:/PATH with an absolute path, got {got}")
            raise ValueError(f"expected HOST:/PATH, got {got}")
        if text.startswith("["):
            end = text.find("]:/")
            host, path = text[1:end], text[end + 2 :]
            if end < 0 or not is_ipv6(host):
                raise ValueError(f"expected [IPv6 address]:/PATH, got {got}")
        else:
            host, _, rest = text.partition(":/")
            path = "/" + rest
            if ":" in host and is_ipv6(host):
                raise ValueError(
                    f"an IPv6 address needs brackets, such as [{host}]:/PATH, got {got}"
                )
            if not is_host(host):
                raise ValueError(
                    "export host must be an IPv4 address, a bracketed IPv6 address or a DNS"
                    f" name, got {got}"
                )
        problem = path_problem(path)
        if problem is not None:
            raise ValueError(f"export path {problem}, got {got}")
        return cls(host, path)


@dataclass(frozen=True, slots=True)
class HostPort(TextValue):
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
            host_ok = is_ipv6(host)
        else:
            host_ok = is_host(host)
        if not host_ok or not re.fullmatch(r"[0-9]{1,5}", port) or not 0 < int(port) < 65536:
            raise ValueError(f"{cls._EXPECTED}, got {describe(text)}")
        return cls(host, int(port))


@dataclass(frozen=True, slots=True)
class AnfVolumeId(TextValue):
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
            raise ValueError(f"{cls._EXPECTED}, got {describe(text)}")
        parts = match.groupdict()
        if not GUID.fullmatch(parts["subscription"]):
            raise ValueError(f"subscription must be a GUID, got {describe(text)}")
        for part, pattern in _ANF_PARTS.items():
            if not pattern.fullmatch(parts[part]):
                label = part.replace("_", " ")
                what = f"{label} name {describe(parts[part])} is not valid"
                raise ValueError(f"{what}, got {describe(text)}")
        return cls(**parts)


@dataclass(frozen=True, slots=True)
class StoreUrl(TextValue):
    """Where the journal and desired state live: ``sqlite:///ABS/PATH``, or the members of
    one etcd cluster, ``etcd://HOST:PORT[,HOST:PORT...]``.

    Exactly one of ``sqlite_path`` and ``etcd_endpoints`` is set, matching ``scheme``.
    """

    scheme: Literal["sqlite", "etcd"]
    sqlite_path: Path | None = None
    etcd_endpoints: tuple[HostPort, ...] = ()

    _EXPECTED: ClassVar[str] = "expected sqlite:///ABSOLUTE/PATH or etcd://HOST:PORT[,HOST:PORT...]"
    _JSON_SCHEMA: ClassVar[dict[str, Any]] = {
        "type": "string",
        "description": "sqlite:///ABSOLUTE/PATH, or etcd://HOST:PORT[,HOST:PORT...] (the"
        " members of one etcd cluster; see the etcd section).",
        "examples": [
            "sqlite:///var/lib/nfs-failover/state.db",
            "etcd://10.0.0.7:2379,10.0.0.8:2379,10.0.0.9:2379",
        ],
    }

    def __str__(self) -> str:
        if self.scheme == "sqlite":
            return f"sqlite://{self.sqlite_path}"
        return "etcd://" + ",".join(map(str, self.etcd_endpoints))

    @classmethod
    def parse(cls, text: str) -> StoreUrl:
        if "@" in text:
            # user:password@host would put a secret into the problem line: never echo it.
            raise ValueError(f"{cls._EXPECTED}; credentials in the URL are not supported")
        if text.startswith("sqlite://"):
            path = text.removeprefix("sqlite://")
            problem = path_problem(path)
            if problem is not None:
                raise ValueError(f"sqlite path {problem}, got {describe(text)}")
            return cls("sqlite", sqlite_path=Path(path))
        if text.startswith("etcd://"):
            members = text.removeprefix("etcd://").split(",")
            try:
                endpoints = tuple(HostPort.parse(member) for member in members)
            except ValueError:
                raise ValueError(f"{cls._EXPECTED}, got {describe(text)}") from None
            if len(set(endpoints)) != len(endpoints):
                raise ValueError(f"etcd members must differ, got {describe(text)}")
            return cls("etcd", etcd_endpoints=endpoints)
        raise ValueError(f"{cls._EXPECTED}, got {describe(text)}")


# -- choices -----------------------------------------------------------------------------


class Mode(StrEnum):
    """How clients use a volume."""

    READ_WRITE = "read-write"
    READ_ONLY = "read-only"


class Failback(StrEnum):
    """Who decides to fail back once the source is healthy again."""

    MANUAL = "manual"
    AUTOMATIC = "automatic"
