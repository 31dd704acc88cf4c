"""Field types of the config file: a type, its validator and its JSON schema in one name.

Each ``Annotated`` type here validates one field on its own (``PositiveDuration``,
``Name``, ``AbsolutePath``, ``MountOptions``, a hook's ``Argv``, ...). They are written by
hand rather than with pydantic's constraints and built-in types because those would give
users pydantic's messages ("String should match pattern '^[a-z0-9]...'") and its duration
grammar (ISO 8601, written back as ``PT20M``): here each refusal says in words what was
expected and quotes the value, and durations are read and written by
``nfs_failover.durations`` (``1m30s``).
"""

from __future__ import annotations

import re
import string
from datetime import timedelta
from enum import StrEnum
from pathlib import Path, PurePath
from typing import Annotated, Final, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BeforeValidator,
    PlainSerializer,
    PlainValidator,
    WithJsonSchema,
)

from nfs_failover.config.problems import char_name, describe, report
from nfs_failover.config.values import GUID, is_host, is_ipv6, path_problem
from nfs_failover.durations import DURATION_HINT, format_duration, parse_duration

__all__ = [
    "CONTINUOUS",
    "HOOK_PLACEHOLDERS",
    "AbsolutePath",
    "Argv",
    "Debounce",
    "EtcdPrefix",
    "FullWalkInterval",
    "HostName",
    "HttpsUrl",
    "MapKey",
    "MountOptions",
    "Name",
    "PositiveDuration",
    "Relationship",
    "Schedule",
    "SecretFilePath",
    "WholeSeconds",
    "Zone",
    "choice",
    "hook_shape",
]

_E = TypeVar("_E", bound=StrEnum)

HOOK_PLACEHOLDERS = (
    "volume",
    "event",
    "from_replica",
    "to_replica",
    "from_export",
    "to_export",
    "group",
    "members",
)

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_MAP_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
_ZONE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
# Whole path segments of letters, digits, ".", "_" and "-", between slashes: "/a/b/".
_ETCD_PREFIX = re.compile(r"/(?:[A-Za-z0-9._-]+/){1,8}")
_OPTION_CHAR = re.compile(r"[A-Za-z0-9_.:/@+=,-]")
_OPTION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*(?:=[A-Za-z0-9_.:/@+-]+)?")
_ONTAP_PATH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,46}:[A-Za-z_][A-Za-z0-9_]{0,202}")
_SCHEDULE_NAMES = {
    "_10minutely": timedelta(minutes=10),
    "hourly": timedelta(hours=1),
    "daily": timedelta(days=1),
}
CONTINUOUS: Final = "continuous"  # the schedule that transfers as soon as changes settle


# -- durations ---------------------------------------------------------------------------


def _duration(minimum: timedelta | None = None, whole_seconds: bool = False) -> PlainValidator:
    """A validator for a duration field, with an optional exclusive lower bound."""

    def check(value: object) -> timedelta:
        duration = _to_duration(value, DURATION_HINT)
        if minimum is not None and duration <= minimum:
            raise ValueError(f"must be more than {format_duration(minimum)}, got {describe(value)}")
        if whole_seconds and duration % timedelta(seconds=1):
            raise ValueError(f"must be a whole number of seconds, got {describe(value)}")
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
        raise ValueError(f"{hint}, got {describe(value)}")
    return parse_duration(value)


def _check_schedule(value: object) -> timedelta | Literal["continuous"]:
    if value == CONTINUOUS:
        return CONTINUOUS
    if isinstance(value, str) and value in _SCHEDULE_NAMES:
        return _SCHEDULE_NAMES[value]
    hint = "expected continuous, a duration from 1s to 1d or one of _10minutely, hourly, daily"
    try:
        duration = _to_duration(value, hint)
    except ValueError:
        raise ValueError(f"{hint}, got {describe(value)}") from None
    if not timedelta(seconds=1) <= duration <= timedelta(days=1):
        raise ValueError(f"{hint}, got {describe(value)}")
    return duration


def _format_schedule(value: timedelta | str) -> str:
    return value if isinstance(value, str) else format_duration(value)


Schedule = Annotated[
    timedelta | Literal["continuous"],
    PlainValidator(_check_schedule),
    PlainSerializer(_format_schedule, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "enum": [CONTINUOUS, *_SCHEDULE_NAMES]},
                _DURATION_SCHEMA.json_schema or {},
            ],
            "description": "When to transfer: continuous (as soon as changes settle), or an"
            " interval: a duration from 1s to 1d, or one of the ANF schedule names"
            " _10minutely (10m), hourly (1h), daily (1d).",
        }
    ),
]


def _between(low: timedelta, high: timedelta) -> PlainValidator:
    """A validator for a duration field bounded on both sides (inclusive)."""
    hint = f"expected a duration from {format_duration(low)} to {format_duration(high)}"

    def check(value: object) -> timedelta:
        try:
            duration = _to_duration(value, hint)
        except ValueError:
            raise ValueError(f"{hint}, got {describe(value)}") from None
        if not low <= duration <= high:
            raise ValueError(f"{hint}, got {describe(value)}")
        return duration

    return PlainValidator(check)


Debounce = Annotated[
    timedelta,
    _between(timedelta(milliseconds=10), timedelta(seconds=10)),
    _DURATION_OUT,
    _DURATION_SCHEMA,
]
FullWalkInterval = Annotated[
    timedelta, _between(timedelta(minutes=1), timedelta(days=7)), _DURATION_OUT, _DURATION_SCHEMA
]


# -- names, hosts and paths --------------------------------------------------------------


def _pattern(regex: re.Pattern[str], expected: str) -> PlainValidator:
    def check(value: object) -> str:
        if not isinstance(value, str) or not regex.fullmatch(value):
            raise ValueError(f"expected {expected}, got {describe(value)}")
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

EtcdPrefix = Annotated[
    str,
    _pattern(
        _ETCD_PREFIX,
        'a key prefix such as "/nfs-failover/": segments of letters, digits, ".", "_" and'
        ' "-", each between slashes',
    ),
    _string_schema(_ETCD_PREFIX),
]


def _check_host_name(value: object) -> str:
    if not isinstance(value, str) or not (is_host(value) or is_ipv6(value)):
        raise ValueError(f"expected a DNS name or an IP address, got {describe(value)}")
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
        raise ValueError(f"expected an absolute path, got {describe(value)}")
    problem = path_problem(value)
    if problem == "must be absolute":
        raise ValueError(f"expected an absolute path, got {describe(value)}")
    if problem is not None:
        raise ValueError(f"path {problem}, got {describe(value)}")
    return Path(value)


def _check_secret_path(value: object) -> Path:
    # The user may have pasted the secret itself here: never echo the value.
    if isinstance(value, PurePath):
        value = str(value)
    problem = path_problem(value) if isinstance(value, str) else "must be absolute"
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
    raise ValueError(f"expected an https://HOST[:PORT] URL, got {describe(value)}")


HttpsUrl = Annotated[
    str,
    PlainValidator(_check_https_url),
    WithJsonSchema({"type": "string", "examples": ["https://management.azure.com"]}),
]
SecretFilePath = Annotated[Path, PlainValidator(_check_secret_path), _PATH_SCHEMA]


def _check_mount_options(value: object) -> str:
    got = describe(value)
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a comma-separated list of NFS mount options, got {got}")
    if value.startswith("-"):
        raise ValueError(f'mount options must not start with "-", got {got}')
    bad = next((c for c in value if not _OPTION_CHAR.fullmatch(c)), None)
    if bad is not None:
        raise ValueError(f"mount options must not contain {char_name(bad)}, got {got}")
    for option in value.split(","):
        if not option:
            raise ValueError(f"mount options must not contain an empty option, got {got}")
        if not _OPTION.fullmatch(option):
            raise ValueError(f"expected NAME or NAME=VALUE, got {describe(option)} in {got}")
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


# -- choices and relationships -----------------------------------------------------------


def choice(enum: type[_E]) -> BeforeValidator:
    """Accept an enum's values only, with a message that lists them."""

    def check(value: object) -> object:
        if isinstance(value, enum):
            return value
        if isinstance(value, str) and value in enum._value2member_map_:
            return enum(value)
        choices = ", ".join(describe(member.value) for member in enum)
        raise ValueError(f"expected one of {choices}, got {describe(value)}")

    return BeforeValidator(check)


def _check_relationship(value: object) -> str:
    if isinstance(value, str) and (GUID.fullmatch(value) or _ONTAP_PATH.fullmatch(value)):
        return value
    raise ValueError(
        'expected a SnapMirror relationship UUID or a destination path "svm:volume",'
        f" got {describe(value)}"
    )


Relationship = Annotated[
    str,
    PlainValidator(_check_relationship),
    WithJsonSchema({"type": "string", "examples": ["svm_dr:crr_dest"]}),
]


# -- hooks -------------------------------------------------------------------------------


def _check_argv_item(value: str) -> str:
    if any(not c.isprintable() for c in value):
        raise ValueError("must not contain control characters")
    try:
        parsed = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(value)]
    except ValueError:
        raise ValueError(
            f"unbalanced braces (write {{{{ and }}}} for literal ones), got {describe(value)}"
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
                f"placeholder {describe(shown)} may not have a format or conversion; "
                f"write {{{field}}}"
            )
    for field in fields:
        if field not in HOOK_PLACEHOLDERS:
            known = ", ".join(f"{{{name}}}" for name in HOOK_PLACEHOLDERS)
            raise ValueError(f"unknown placeholder {describe('{' + field + '}')}; known: {known}")
    return value


def _check_argv(argv: tuple[str, ...]) -> tuple[str, ...]:
    if not argv:
        raise ValueError("expected a program and its arguments, got an empty list")
    if not argv[0].startswith("/"):
        report([((0,), f"expected the absolute path of the program, got {describe(argv[0])}")])
    return argv


Argv = Annotated[
    tuple[Annotated[str, AfterValidator(_check_argv_item)], ...], AfterValidator(_check_argv)
]


def hook_shape(value: object) -> object:
    """A hook as a mapping: a bare argv list becomes ``{"argv": [...]}``; a string is refused."""
    if isinstance(value, str):
        raise ValueError(
            'expected an argv list such as [/usr/local/bin/quiesce, --volume, "{volume}"],'
            " not a shell command string"
        )
    if isinstance(value, list | tuple):
        return {"argv": value}
    return value
