"""How records are written as text, the same in every store: JSON, read back whole or
refused with a ``StoreError`` that names the record."""

from __future__ import annotations

import json
from dataclasses import asdict

from nfs_failover.desired import VolumeDesired
from nfs_failover.store.contract import UnreadableRecord


def desired_json(desired: VolumeDesired) -> str:
    return json.dumps(asdict(desired))


def parse_desired(volume: str, text: object) -> VolumeDesired:
    """The desired state of ``volume`` from its stored text; StoreError naming the volume
    and showing the start of the text when it cannot be read (``UnreadableRecord``)."""
    try:
        data = json.loads(str(text))
        return VolumeDesired(
            volume=str(data["volume"]),
            offered=tuple(map(str, data["offered"])),
            active=str(data["active"]),
            fenced=tuple(map(str, data["fenced"])),
            generation=int(data["generation"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        reason = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        shown = str(text)[:80]
        raise UnreadableRecord(
            f"desired state of volume {volume}: unreadable row ({reason}): {shown!r}"
        ) from None
