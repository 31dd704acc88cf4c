"""What each client's applications saw, and whether anything they were promised was lost.

From one client host's records (``drill.guests``): how long after the outage its first
acknowledged write (or read) on zone 2 came, how long writes and reads were blocked,
which processes hung and for how long; then the verification against the final source
and the files the failback preserved: every acknowledged file with its content, every
committed sqlite row, ``pragma integrity_check`` on the database, and no stale read.

A read is stale when it misses what it is owed: on the original source, every file and
version acknowledged before the read began, on any replica (nothing may be hidden when
clients come back); on the failover destination, what was acknowledged there (writes
made on zone 1 after its last transfer are the RPO window, kept in the preserved set).
"""

from __future__ import annotations

import bisect
import sqlite3
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nfs_failover.drill.guests import Op, Records
from nfs_failover.drill.model import ClientFigures
from nfs_failover.lab import guest_workload as gw

READ_KINDS = ("read",)
WRITE_KINDS = ("write", "row")


@dataclass(frozen=True)
class Instants:
    """The drill's instants (epoch seconds) the figures are measured from."""

    t0: float
    outage: float | None
    restore: float | None = None
    failback: float | None = None


@dataclass(frozen=True)
class Volume:
    """What the figures need of the volume: its replicas' servers and the final state."""

    names: Mapping[str, str]  # HOST:/PATH -> replica name
    source: str  # HOST:/PATH of the original source
    destination: str
    final: Path  # the final source's folder, on the host
    preserved: Mapping[str, Sequence[Path]] = field(default_factory=dict)  # name -> copies


@dataclass(frozen=True)
class Rows:
    seqs: frozenset[int]
    integrity: str  # "ok", or what integrity_check (or opening the database) said


def client_figures(
    name: str,
    records: Records,
    at: Instants,
    volume: Volume,
    *,
    prefix: str,
    read_only: bool,
    actions: Sequence[tuple[float, str, str]] = (),
) -> ClientFigures:
    ops = records.ops
    acked = [op for op in ops if op.ok and op.end is not None]
    kinds = READ_KINDS if read_only else WRITE_KINDS
    useful = [op for op in acked if op.kind in kinds]
    after = at.outage
    first2 = _first_on(useful, volume.destination, after)
    back = _first_on(useful, volume.source, at.failback)
    files = _files(acked, prefix, volume)
    rows = _rows(acked, prefix, volume)
    stale, hidden = _stale_reads(acked, volume, prefix)
    hangs = [h.killed - h.since for h in records.hangs]
    return ClientFigures(
        name=name,
        rto_s=_span(after, first2),
        first_write_s=_span(after, _first_after(acked, WRITE_KINDS, after)),
        first_read_s=_span(after, _first_after(acked, READ_KINDS, after)),
        write_blocked_s=None if read_only else _blocked(acked, WRITE_KINDS, after),
        read_blocked_s=_blocked(acked, READ_KINDS, after),
        hung_processes=len(hangs),
        hung_longest_s=round(max(hangs), 3) if hangs else None,
        writes_acknowledged=files[0],
        writes_lost=len(files[1]),
        writes_preserved=files[2],
        rows_acknowledged=rows[0],
        rows_lost=len(rows[1]),
        rows_preserved=rows[2],
        database=rows[3],
        writes_refused=sum(1 for op in ops if op.error == "EROFS"),
        stale_reads=stale,
        hidden_files=hidden,
        corrupt_reads=_corrupt_reads(acked),
        back_on_source_s=_span(at.failback, back),
        lost=tuple(files[1][:5] + [f"row {seq}" for seq in rows[1][:5]]),
        actions=tuple(
            {"at": round(t - at.t0, 3), "what": what, "detail": detail}
            for t, what, detail in actions
        ),
        mounts=tuple(
            {"at": round(m.at - at.t0, 3), "replica": _name(volume, m.server)}
            for m in records.mounts
        ),
    )


def _first_on(ops: Iterable[Op], server: str, after: float | None) -> float | None:
    """When the first operation begun on ``server`` after ``after`` ended."""
    if after is None:
        return None
    ends = [op.end for op in ops if op.server == server and op.begin >= after and op.end]
    return min(ends) if ends else None


def _first_after(ops: Iterable[Op], kinds: tuple[str, ...], after: float | None) -> float | None:
    """When the first operation of ``kinds`` begun after ``after`` ended, on any replica."""
    if after is None:
        return None
    ends = [op.end for op in ops if op.kind in kinds and op.begin >= after and op.end]
    return min(ends) if ends else None


def _name(volume: Volume, server: str | None) -> str | None:
    return volume.names.get(server, server) if server else None


def _span(start: float | None, end: float | None) -> float | None:
    return round(end - start, 3) if start is not None and end is not None else None


def _blocked(acked: Sequence[Op], kinds: tuple[str, ...], outage: float | None) -> float | None:
    """From the last acknowledged operation before the outage to the first after it."""
    if outage is None:
        return None
    ends = [op.end for op in acked if op.kind in kinds and op.end is not None]
    before = [end for end in ends if end <= outage]
    later = [end for end in ends if end > outage]
    if not before or not later:
        return None
    return round(min(later) - max(before), 3)


def _files(acked: Sequence[Op], prefix: str, volume: Volume) -> tuple[int, list[str], int]:
    """(acknowledged, lost names, found only in the preserved set) of the writer's files."""
    lost, preserved, count = [], 0, 0
    for op in acked:
        if op.kind != "write" or op.seq is None:
            continue
        count += 1
        name = gw.file_name(prefix, op.seq)
        owed = gw.content(prefix, op.seq)
        if _read(volume.final / name) == owed:
            continue
        if any(_read(copy) == owed for copy in volume.preserved.get(name, ())):
            preserved += 1
        else:
            lost.append(name)
    return count, lost, preserved


def _rows(
    acked: Sequence[Op], prefix: str, volume: Volume
) -> tuple[int, list[int], int, str | None]:
    """(committed, lost, found only in the preserved database, integrity_check) of sqlite's rows."""
    committed = sorted({op.seq for op in acked if op.kind == "row" and op.seq is not None})
    if not committed:
        return 0, [], 0, None
    name = gw.database_name(prefix)
    final = read_rows(volume.final / name)
    kept: set[int] = set()
    for copy in volume.preserved.get(name, ()):
        kept |= read_rows(copy).seqs  # with the journal preserved beside it, if any
    preserved = Rows(frozenset(kept), "")
    lost = [seq for seq in committed if seq not in final.seqs and seq not in preserved.seqs]
    only_preserved = sum(1 for seq in committed if seq not in final.seqs and seq in preserved.seqs)
    return len(committed), lost, only_preserved, final.integrity


def read_rows(path: Path) -> Rows:
    """The rows of a database on the host, read from a copy (with its journal, so a hot
    journal is rolled back as sqlite would, without touching the original)."""
    data = _read(path)
    if data is None:
        return Rows(frozenset(), "absent")
    return read_rows_from(data, _read(path.with_name(path.name + "-journal")))


def read_rows_from(data: bytes, journal: bytes | None = None) -> Rows:
    with tempfile.TemporaryDirectory(prefix="nfo-rows-") as folder:
        copy = Path(folder) / "rows.db"
        copy.write_bytes(data)
        if journal:
            copy.with_name("rows.db-journal").write_bytes(journal)
        try:
            with sqlite3.connect(copy) as db:
                integrity = "; ".join(str(r[0]) for r in db.execute("pragma integrity_check"))
                seqs = frozenset(int(r[0]) for r in db.execute("select seq from rows"))
            db.close()
        except sqlite3.Error as exc:
            return Rows(frozenset(), f"cannot read: {exc}")
    return Rows(seqs, integrity)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _stale_reads(acked: Sequence[Op], volume: Volume, prefix: str) -> tuple[int, int]:
    """(reads that missed what they were owed, the most owed files one listing missed)."""
    preserved = {
        int(n[len(prefix) + 1 :])
        for n in volume.preserved
        if n.startswith(prefix + "w") and n[len(prefix) + 1 :].isdigit()
    }
    writes = sorted(
        (op for op in acked if op.kind in ("write", "version") and op.seq is not None),
        key=lambda op: op.end or 0.0,
    )
    reads = sorted((op for op in acked if op.kind == "read"), key=lambda op: op.begin)
    owed_any: list[int] = []  # sorted seqs of files acknowledged anywhere
    owed_on: dict[str | None, list[int]] = {}
    version_any, version_on = 0, dict[str | None, int]()
    stale = hidden = 0
    index = 0
    for read in reads:
        while index < len(writes) and (writes[index].end or 0.0) < read.begin:
            write = writes[index]
            index += 1
            if write.seq in preserved:
                continue
            assert write.seq is not None
            if write.kind == "version":
                version_any = max(version_any, write.seq)
                version_on[write.server] = max(version_on.get(write.server, 0), write.seq)
            else:
                bisect.insort(owed_any, write.seq)
                bisect.insort(owed_on.setdefault(write.server, []), write.seq)
        on_source = read.server == volume.source
        owed = owed_any if on_source else owed_on.get(read.server, [])
        version = version_any if on_source else version_on.get(read.server, 0)
        missing = _missing(owed, read.seen.get("seqs"))
        seen_version = read.seen.get("version")
        older = version > 0 and (not isinstance(seen_version, int) or seen_version < version)
        if missing or older:
            stale += 1
            hidden = max(hidden, missing)
    return stale, hidden


def _corrupt_reads(acked: Sequence[Op]) -> int:
    """Reads of a file whose write was acknowledged before the read began, with content
    other than what was written (a file still being written may read short)."""
    done = {op.seq: op.end for op in acked if op.kind == "write" and op.end is not None}
    count = 0
    for op in acked:
        checked = op.seen.get("checked")
        if op.kind != "read" or op.seen.get("intact") is not False or not isinstance(checked, int):
            continue
        end = done.get(checked)
        count += end is not None and end < op.begin
    return count


def _missing(owed: Sequence[int], ranges: object) -> int:
    """How many of ``owed`` (sorted) the listing's ranges do not cover."""
    spans = sorted((int(r[0]), int(r[1])) for r in ranges) if isinstance(ranges, list) else []
    missing, at = 0, 0
    for seq in owed:
        while at < len(spans) and spans[at][1] < seq:
            at += 1
        if at == len(spans) or spans[at][0] > seq:
            missing += 1
    return missing
