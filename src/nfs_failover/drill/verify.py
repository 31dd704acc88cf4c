"""The drill's verdict: its summary figures and its checks, from what it saw.

Pure functions of the evidence the drill gathered (the clients' figures, the journal's
instants, the replication's state, the split-brain monitor's samples), so that a report
can be reasoned about, and tested, apart from the lab that produced it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from nfs_failover.config import Mode, Volume
from nfs_failover.drill.guests import Op
from nfs_failover.drill.journal import step_seconds
from nfs_failover.drill.model import Check, ClientFigures, Summary
from nfs_failover.drill.options import DrillOptions
from nfs_failover.replication.base import MirrorState, ReplicationStatus
from nfs_failover.store import Event


@dataclass(frozen=True)
class Evidence:
    """What one drill saw. Instants (``at``) are epoch seconds: "outage", "restore",
    "failback", "failback_done", "first1" (every client back on zone 1)."""

    options: DrillOptions
    volume: Volume
    clients: Sequence[ClientFigures]
    at: dict[str, float]
    events: Sequence[Event]  # the volume's journal
    detected: float | None  # the failover began
    status: ReplicationStatus  # the replication at the end
    stayed: Sequence[Op]  # useful operations between the restore and the failback
    preserved: str  # where the failback's copies are, in words
    split_brain: Sequence[float]
    samples: int  # of the split-brain monitor
    false_failovers: int
    failure: str | None  # why the drill stopped before its end


def span(start: float | None, end: float | None) -> float | None:
    return round(end - start, 3) if start is not None and end is not None else None


def worst(values: Iterable[float | None]) -> float | None:
    """The slowest client's figure; None when any client has none (it was not seen)."""
    found = list(values)
    return None if not found or None in found else max(v for v in found if v is not None)


def summary(e: Evidence, *, passed: bool) -> Summary:
    o, clients, at = e.options, e.clients, e.at
    rw = o.mode is Mode.READ_WRITE
    outage = at.get("outage")
    rto = worst(c.rto_s for c in clients)
    return Summary(
        passed=passed,
        mode=o.mode.value,
        grace_s=o.grace,
        detection_s=span(outage, e.detected),
        rto_s=rto,
        rto_overhead_s=round(rto - o.grace, 3) if rto is not None else None,
        break_s=step_seconds(list(e.events), "break", "failover", outage) if rw else None,
        write_unavailable_s=worst(c.write_blocked_s for c in clients) if rw else None,
        failback_s=span(at.get("failback"), at.get("failback_done")),
        failback_unavailable_s=worst(c.back_on_source_s for c in clients),
        writes_acknowledged=sum(c.writes_acknowledged + c.rows_acknowledged for c in clients),
        writes_lost=sum(c.writes_lost + c.rows_lost for c in clients),
        writes_preserved=sum(c.writes_preserved + c.rows_preserved for c in clients),
        flaps=o.flaps,
        false_failovers=e.false_failovers,
        split_brain_instants=len(e.split_brain),
        final_mirror_state=e.status.mirror_state.value,
    )


def checks(e: Evidence) -> list[Check]:
    o, at, clients, status = e.options, e.at, e.clients, e.status
    source = str(e.volume.replicas[0].export)
    acknowledged = sum(c.writes_acknowledged + c.rows_acknowledged for c in clients)
    preserved = sum(c.writes_preserved + c.rows_preserved for c in clients)
    lost = [name for c in clients for name in c.lost]
    lost_count = sum(c.writes_lost + c.rows_lost for c in clients)
    databases = {c.name: c.database for c in clients if c.database is not None}
    stale = sum(c.stale_reads + c.corrupt_reads for c in clients)
    back_after = span(at.get("failback"), at.get("first1"))
    on_zone1 = sum(op.server == source for op in e.stayed)
    return [
        Check(
            "the drill ran to its end",
            e.failure is None,
            e.failure or "outage, failover, restore, failback, clients back",
        ),
        Check(
            "no acknowledged write lost",
            lost_count == 0,
            f"{acknowledged} acknowledged (files whose fsync returned, committed rows) "
            f"by {len(clients)} clients: {preserved} only in the preserved set "
            f"({e.preserved}), {lost_count} lost" + (f": {', '.join(lost[:5])}" if lost else ""),
        ),
        Check(
            "every database intact on the final source",
            all(v == "ok" for v in databases.values()),
            "; ".join(f"{k}: {v}" for k, v in databases.items()) or "no rows written",
        ),
        Check(
            "no stale read",
            stale == 0,
            f"{sum(c.stale_reads for c in clients)} reads missed a file or version owed, "
            f"{sum(c.corrupt_reads for c in clients)} read wrong content",
        ),
        Check(
            "never two writable replicas offered",
            not e.split_brain,
            f"{e.samples} samples of {len(clients)} client maps and both exports' access, "
            f"every 100 ms: {len(e.split_brain)} offered two writable replicas",
        ),
        Check(
            "replication mirrored in the original direction",
            status.mirror_state is MirrorState.MIRRORED
            and status.source == e.volume.replicas[0].name,
            f"{status.mirror_state.value}, {status.source} -> {status.destination}",
        ),
        Check(
            "no failover on a flap",
            not e.false_failovers,
            f"{o.flaps} outages of {o.flap_seconds:g}s (grace {o.grace:g}s): "
            f"{e.false_failovers} failovers"
            if o.flaps
            else "no flaps asked for (--flaps N)",
        ),
        Check(
            "the clients stayed on zone 2 until the failback",
            "restore" in at and not on_zone1,
            f"{len(e.stayed)} operations between the restore and the failback, "
            f"{on_zone1} on zone 1",
        ),
        Check(
            "the clients are back on zone 1",
            back_after is not None,
            f"every client's first {o.op} on {source} {back_after:.2f}s after the failback began"
            if back_after is not None
            else "not seen",
        ),
    ]


# The comparison's rows: words, how the clients' figures combine, which figures.
_COMPARED = (
    ("first read after the outage (s)", "worst", ("first_read_s",)),
    ("first write after the outage (s)", "worst", ("first_write_s",)),
    ("writes refused by a read-only replica (EROFS)", "total", ("writes_refused",)),
    ("hung processes", "total", ("hung_processes",)),
    ("writes acknowledged (files and rows)", "total", ("writes_acknowledged", "rows_acknowledged")),
    ("acknowledged writes lost or hidden", "total", ("writes_lost", "rows_lost")),
    ("stale reads", "total", ("stale_reads",)),
    ("most owed files one listing missed", "worst", ("hidden_files",)),
)


def compare(
    seed: Sequence[ClientFigures], ours: Sequence[ClientFigures]
) -> dict[str, dict[str, object]]:
    """The seed's setup and nfs-failover side by side: the slowest client's times, and
    totals over the clients."""

    def combine(clients: Sequence[ClientFigures], how: str, names: tuple[str, ...]) -> object:
        if how == "worst":
            values = [getattr(c, names[0]) for c in clients]
            return None if not values or None in values else max(values)
        return sum(int(getattr(c, name)) for c in clients for name in names)

    runs = (("seed", seed), ("nfs-failover", ours))
    return {
        label: {run: combine(clients, how, names) for run, clients in runs}
        for label, how, names in _COMPARED
    }
