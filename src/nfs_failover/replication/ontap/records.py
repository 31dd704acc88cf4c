"""ONTAP's records read into the project's types: a SnapMirror relationship, its
``lag_time``, a job, and a volume's export policy and its rules' ``rw_rule`` (what a
storage fence changes and saves).

Records come as plain JSON objects (the client skips the library's schema check), so
every field is read defensively: a missing or mistyped one is None, and a state this
code does not know reaches the caller as ONTAP's word instead of raising.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypedDict

from nfs_failover.replication.base import (
    MirrorState,
    RelationshipStatus,
    normalise_mirror_state,
    normalise_relationship_status,
)

__all__ = [
    "NEVER",
    "OntapJob",
    "OntapRecord",
    "RwRule",
    "export_policy",
    "parse_lag_time",
    "rw_rules",
]

NEVER = ["never"]  # the rw_rule that grants writes to no client

# transfer.state: a finished transfer is history, so the relationship is idle.
_FINISHED_TRANSFER = frozenset({"success", "failed", "aborted", "hard_aborted"})
_FAILED_TRANSFER = frozenset({"failed", "aborted", "hard_aborted"})
_ISO_DURATION = re.compile(
    r"P(?:(?P<weeks>\d{1,9})W)?(?:(?P<days>\d{1,9})D)?"
    r"(?:T(?:(?P<hours>\d{1,12})H)?(?:(?P<minutes>\d{1,12})M)?"
    r"(?:(?P<seconds>\d{1,12}(?:[.,]\d{1,9})?)S)?)?",
    re.ASCII,
)


def parse_lag_time(text: str | None) -> timedelta | None:
    """ONTAP's ``lag_time``, an ISO-8601 duration such as ``PT8H35M42S`` or ``P1DT2H``.

    Years and months have no fixed length and are not accepted; anything unreadable is
    None, never an exception.
    """
    if not text:
        return None
    match = _ISO_DURATION.fullmatch(text.strip())
    if match is None or text.strip().endswith("T"):
        return None
    parts = {name: value for name, value in match.groupdict().items() if value is not None}
    if not parts:
        return None
    seconds = float(parts.pop("seconds", "0").replace(",", "."))
    try:
        return timedelta(seconds=seconds, **{name: int(value) for name, value in parts.items()})
    except OverflowError:
        return None


@dataclass(frozen=True)
class OntapRecord:
    """One reading of the relationship, in ONTAP's words (fields missing are None)."""

    uuid: str
    state: str | None
    healthy: bool
    reasons: tuple[tuple[str, str | None], ...]  # unhealthy_reason: (message, code)
    lag_time: str | None
    exported_snapshot: str | None
    source_path: str | None
    destination_path: str | None
    transfer_state: str | None
    transfer_bytes: int | None
    transfer_end: datetime | None
    transfer_uuid: str | None

    @classmethod
    def parse(cls, data: Mapping[str, object]) -> OntapRecord:
        uuid = _text(data, "uuid")
        if uuid is None:
            raise ValueError("a relationship record without a uuid")
        transfer = _mapping(data, "transfer")
        reasons = data.get("unhealthy_reason")
        return cls(
            uuid=uuid,
            state=_text(data, "state"),
            healthy=data.get("healthy") is True,
            reasons=tuple(
                (_text(r, "message") or "unknown reason", _text(r, "code"))
                for r in (reasons if isinstance(reasons, list) else [])
                if isinstance(r, dict)
            ),
            lag_time=_text(data, "lag_time"),
            exported_snapshot=_text(data, "exported_snapshot"),
            source_path=_text(_mapping(data, "source"), "path"),
            destination_path=_text(_mapping(data, "destination"), "path"),
            transfer_state=_text(transfer, "state"),
            transfer_bytes=_count(transfer.get("bytes_transferred")),
            transfer_end=_time(_text(transfer, "end_time")),
            transfer_uuid=_text(transfer, "uuid"),
        )

    @property
    def mirror_state(self) -> MirrorState:
        return normalise_mirror_state(self.state)

    @property
    def relationship_status(self) -> RelationshipStatus:
        """Transferring while a transfer is queued or runs; idle once it has finished."""
        if self.transfer_state is None or self.transfer_state.lower() in _FINISHED_TRANSFER:
            return RelationshipStatus.IDLE
        return normalise_relationship_status(self.transfer_state)

    @property
    def transfer_mark(self) -> tuple[str | None, datetime | None]:
        """What tells one transfer from the next."""
        return self.transfer_uuid, self.transfer_end

    @property
    def transfer_failed(self) -> bool:
        """The last transfer failed or was aborted."""
        return (self.transfer_state or "").lower() in _FAILED_TRANSFER

    @property
    def error(self) -> str | None:
        if self.reasons:
            return "; ".join(message for message, _ in self.reasons)
        if self.transfer_failed:
            return f"last transfer {self.transfer_state}"
        return None

    def describe(self) -> str:
        """``transferring, 1.2 GB`` while a transfer runs, else the state."""
        if self.relationship_status is RelationshipStatus.TRANSFERRING:
            return f"{self.transfer_state}, {_size(self.transfer_bytes or 0)}"
        return self.state or "state unknown"

    def raw(self) -> dict[str, str]:
        values = {
            "uuid": self.uuid,
            "state": self.state,
            "healthy": "true" if self.healthy else "false",
            "unhealthy_reason": self.error if self.reasons else None,
            "lag_time": self.lag_time,
            "exported_snapshot": self.exported_snapshot,
            "source.path": self.source_path,
            "destination.path": self.destination_path,
            "transfer.state": self.transfer_state,
            "transfer.bytes_transferred": _opt_str(self.transfer_bytes),
            "transfer.end_time": self.transfer_end.isoformat() if self.transfer_end else None,
        }
        return {key: value for key, value in values.items() if value is not None}


@dataclass(frozen=True)
class OntapJob:
    """One reading of an ONTAP job: its state (``unknown`` when it shows none), and its
    error from ``error`` (message, code) or else its own ``message`` and ``code``."""

    state: str
    message: str
    code: str | None

    @classmethod
    def parse(cls, data: Mapping[str, object]) -> OntapJob:
        error = _mapping(data, "error")
        return cls(
            state=_text(data, "state") or "unknown",
            message=_text(error, "message") or _text(data, "message") or "",
            code=_text(error, "code") or _text(data, "code"),
        )


def _mapping(data: Mapping[str, object], key: str) -> Mapping[str, object]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def _text(data: Mapping[str, object], key: str) -> str | None:
    value = data.get(key)
    if isinstance(value, bool) or value is None:
        return None
    return str(value) if isinstance(value, str | int | float) else None


def _count(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _opt_str(value: int | None) -> str | None:
    return None if value is None else str(value)


def _size(count: int) -> str:
    """Bytes in decimal units, as ONTAP's CLI shows them: ``1.2 GB``."""
    if count < 1000:
        return f"{count} B"
    size = float(count)
    for unit in ("kB", "MB", "GB"):
        size /= 1000
        if size < 1000:
            return f"{size:.1f} {unit}"
    return f"{size / 1000:.1f} TB"


def export_policy(volume: Mapping[str, object]) -> tuple[int, str] | None:
    """The id and name of a volume record's ``nas.export_policy``, or None."""
    policy = _mapping(_mapping(volume, "nas"), "export_policy")
    ident, name = policy.get("id"), policy.get("name")
    if not isinstance(ident, int) or isinstance(ident, bool):
        return None
    return ident, name if isinstance(name, str) else str(ident)


class RwRule(TypedDict):
    """One export rule's index and who may write through it, as a storage fence saves it."""

    index: int
    rw_rule: list[str]


def rw_rules(records: Sequence[object]) -> list[RwRule]:
    """Each export rule's ``index`` and ``rw_rule``; a record that is not an object with a
    whole number index and a list of words as rw_rule raises ValueError."""
    rules: list[RwRule] = []
    for record in records:
        if not isinstance(record, dict):
            raise ValueError(f"an export rule that is not an object: {record!r}")
        index, rw_rule = record.get("index"), record.get("rw_rule")
        if not isinstance(index, int) or isinstance(index, bool):
            raise ValueError(f"an export rule without an index: {record}")
        if not isinstance(rw_rule, list) or not all(isinstance(word, str) for word in rw_rule):
            raise ValueError(f"export rule {index} has no rw_rule list: {record}")
        rules.append(RwRule(index=index, rw_rule=list(rw_rule)))
    return rules
