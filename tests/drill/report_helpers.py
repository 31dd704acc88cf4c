"""Drill reports to render: a drill of one client, a drill of two client hosts, and the
figures of one client host, each with a change or two where a test asks for one."""

from __future__ import annotations

from nfs_failover.drill.model import (
    Check,
    ClientFigures,
    DrillReport,
    Mark,
    Phase,
    Sample,
    Summary,
)

PHASES = [
    Phase("baseline", "Baseline", 0.0, 10.0),
    Phase("outage", "Zone 1 cut off", 10.0, 25.0),
    Phase("failover", "Failover", 25.0, 28.0),
    Phase("on-zone2", "Serving from zone 2", 28.0, 45.0),
    Phase("failback", "Failback", 45.0, 52.0),
    Phase("back-on-zone1", "Back on zone 1", 52.0, 60.0),
]
MARKS = [
    Mark("outage", "Outage begins", 10.0),
    Mark("detected", "Outage detected", 16.5),
    Mark("break-done", "Mirror broken", 26.0),
    Mark("first-write-zone2", "First write on zone 2", 27.5),
    Mark("failback-done", "Failback done", 51.0),
]


def samples(count: int, span: float = 60.0) -> list[Sample]:
    """Writes and reads spread over the drill: on site1 except while the drill is on zone 2,
    failing during the outage."""
    out = []
    for i in range(count):
        at = span * i / count
        replica = "dest1" if 25.0 <= at < 52.0 else "site1"
        kind = "write" if i % 2 == 0 else "read"
        ok = not 10.0 <= at < 27.5
        out.append(Sample(at, replica, kind, ok))
    return out


def summary(**changes: object) -> Summary:
    figures: dict[str, object] = {
        "passed": True,
        "mode": "automatic",
        "grace_s": 5.0,
        "detection_s": 6.5,
        "rto_s": 17.5,
        "rto_overhead_s": 12.5,
        "break_s": 1.0,
        "write_unavailable_s": 17.5,
        "failback_s": 6.0,
        "failback_unavailable_s": 0.8,
        "writes_acknowledged": 1500,
        "writes_lost": 0,
        "writes_preserved": 1500,
        "flaps": 0,
        "false_failovers": 0,
        "split_brain_instants": 0,
        "final_mirror_state": "mirrored",
        "report_html": None,
    }
    figures.update(changes)
    return Summary(**figures)  # type: ignore[arg-type]


def drill(count: int = 3000, **changes: object) -> DrillReport:
    return DrillReport(
        summary=summary(**changes),
        checks=[
            Check("no-acknowledged-write-lost", True, "1500 of 1500 writes read back"),
            Check("one-failover", True, "1 failover, 0 false failovers"),
        ],
        phases=list(PHASES),
        marks=list(MARKS),
        samples=samples(count),
        started_at=1_764_100_000.0,
        notes=["zone az1 cut off with nftables"],
        lab={"state_dir": "/var/lib/nfs-failover/lab", "zones": ["az1", "az2"]},
    )


def client_figures(name: str, **changes: object) -> ClientFigures:
    figures: dict[str, object] = {
        "name": name,
        "rto_s": 17.5,
        "first_write_s": 17.5,
        "first_read_s": 17.4,
        "write_blocked_s": 18.2,
        "read_blocked_s": 17.9,
        "hung_processes": 0,
        "hung_longest_s": None,
        "writes_acknowledged": 750,
        "writes_lost": 0,
        "writes_preserved": 12,
        "rows_acknowledged": 300,
        "rows_lost": 0,
        "rows_preserved": 0,
        "database": "ok",
        "writes_refused": 0,
        "stale_reads": 0,
        "hidden_files": 0,
        "corrupt_reads": 0,
        "back_on_source_s": 1.2,
        "actions": (
            {"at": 26.5, "what": "steered", "detail": "map reloaded: dest1"},
            {"at": 26.6, "what": "unmounted", "detail": "lazy unmount of the key"},
            {"at": 51.5, "what": "steered", "detail": "map reloaded: site1"},
        ),
        "mounts": (
            {"at": 0.5, "replica": "site1"},
            {"at": 26.6, "replica": None},
            {"at": 27.2, "replica": "dest1"},
            {"at": 52.0, "replica": "site1"},
        ),
    }
    figures.update(changes)
    return ClientFigures(**figures)  # type: ignore[arg-type]


def clients_drill(count: int = 3000, **changes: object) -> DrillReport:
    """A drill of two client hosts, each with half of the samples."""
    report = drill(count, client_kind="kernel", **changes)
    report.samples = [
        Sample(s.at, s.replica, s.kind, s.ok, f"client{i // 2 % 2 + 1}")
        for i, s in enumerate(report.samples)
    ]
    report.clients = [
        client_figures("client1"),
        client_figures("client2", rto_s=19.0, hung_processes=1, hung_longest_s=31.0),
    ]
    return report
