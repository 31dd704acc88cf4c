"""What a drill produced: its summary figures, its checks, and its timeline.

The summary's keys are a stable interface (``nfs-failover drill --json``, README): times
in seconds as numbers, ``None`` (JSON ``null``) where a figure does not apply.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

CLIENT_KIND = "kernel"  # client hosts: Linux VMs, the kernel NFS client, the real automount


@dataclass(frozen=True)
class Phase:
    """A span of the drill: ``start``/``end`` in seconds since the drill began."""

    name: str  # stable id: "baseline", "flaps", "outage", "failover", "on-zone2", "failback", ...
    label: str  # words for people
    start: float
    end: float


@dataclass(frozen=True)
class Mark:
    """An instant of the drill, in seconds since it began."""

    name: str  # stable id: "outage", "detected", "break-done", "first-write-zone2", ...
    label: str
    at: float


@dataclass(frozen=True)
class Sample:
    """One client operation, as the workload saw it."""

    at: float  # seconds since the drill began
    replica: str  # the replica the client talked to ("site1", "dest1")
    kind: str  # "write" or "read"
    ok: bool
    client: str = ""  # the client host ("client1")


@dataclass(frozen=True)
class ClientFigures:
    """What one client host's applications saw (``clients`` in the summary). Times in
    seconds; ``None`` where a figure does not apply or was not seen."""

    name: str
    rto_s: float | None  # outage -> first acknowledged write (read-only: read) on zone 2
    first_write_s: float | None  # outage -> first acknowledged write begun after it, anywhere
    first_read_s: float | None
    write_blocked_s: float | None  # last acknowledged write before the outage -> first after
    read_blocked_s: float | None
    hung_processes: int  # operations with no answer past the watchdog's limit (killed)
    hung_longest_s: float | None
    writes_acknowledged: int  # files whose fsync returned
    writes_lost: int
    writes_preserved: int  # owed, found only in the failback's preserved set
    rows_acknowledged: int  # sqlite rows whose COMMIT returned
    rows_lost: int
    rows_preserved: int
    database: str | None  # pragma integrity_check on the final source, None without rows
    writes_refused: int  # EROFS answers (a read-only replica)
    stale_reads: int  # reads that missed a file or version they were owed
    hidden_files: int  # the most owed files one listing missed
    corrupt_reads: int  # reads whose content was not what was written
    back_on_source_s: float | None  # failback begins -> first acknowledged op on zone 1
    lost: tuple[str, ...] = ()  # the first few lost files and rows, by name
    actions: tuple[dict[str, object], ...] = ()  # the agent's: {at, what, detail}
    mounts: tuple[dict[str, object], ...] = ()  # the key's mounts: {at, replica}


@dataclass(frozen=True)
class Summary:
    """The drill's figures (``--json``); with the clients' own (``clients``), the summary.
    Times in seconds; None where a figure does not apply or was not seen (a drill that
    stopped early has only the first fields)."""

    passed: bool
    mode: str
    grace_s: float
    detection_s: float | None = None
    rto_s: float | None = None  # the slowest client's
    rto_overhead_s: float | None = None  # rto_s minus the grace period
    break_s: float | None = None
    write_unavailable_s: float | None = None
    failback_s: float | None = None
    failback_unavailable_s: float | None = None
    writes_acknowledged: int | None = None  # files and rows
    writes_lost: int | None = None
    writes_preserved: int | None = None
    flaps: int = 0
    false_failovers: int | None = None
    split_brain_instants: int | None = None
    final_mirror_state: str | None = None
    report_html: str | None = None
    client_kind: str = CLIENT_KIND


SUMMARY_KEYS = (*(f.name for f in fields(Summary)), "clients")


@dataclass(frozen=True)
class Check:
    """One verification: what was checked, whether it held, and the evidence."""

    name: str
    passed: bool
    detail: str


@dataclass
class DrillReport:
    summary: Summary
    checks: list[Check] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    started_at: float = 0.0  # epoch seconds of the drill's t0
    notes: list[str] = field(default_factory=list)
    lab: dict[str, object] = field(default_factory=dict)  # zones, exports, state folder
    clients: list[ClientFigures] = field(default_factory=list)
    # --compare seed: figure -> {"seed": value, "nfs-failover": value}
    comparison: dict[str, dict[str, object]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.summary.passed

    def summary_json(self) -> dict[str, object]:
        """The summary as ``--json`` prints it: exactly SUMMARY_KEYS, in their order."""
        return {**asdict(self.summary), "clients": [asdict(c) for c in self.clients]}

    def to_json(self) -> dict[str, object]:
        return {
            "summary": self.summary_json(),
            "checks": [asdict(c) for c in self.checks],
            "phases": [asdict(p) for p in self.phases],
            "marks": [asdict(m) for m in self.marks],
            "samples": [asdict(s) for s in self.samples],
            "started_at": self.started_at,
            "notes": list(self.notes),
            "lab": dict(self.lab),
            "comparison": dict(self.comparison),
        }
