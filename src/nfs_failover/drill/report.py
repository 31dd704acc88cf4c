"""The drill's report: ``drill.json``, a self-contained ``drill.html`` and ``timeline.svg``.

The timeline is plain SVG text, escaped as it is built, so the page works offline and the
chart can stand alone as an image. Ticks sharing a pixel column are merged, which keeps the
chart small however many client operations the drill recorded. A drill with client hosts
gets one lane per client (its operations coloured by the replica they went to, its agent's
actions and its mounts); an older report without them, one lane per replica.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from html import escape
from pathlib import Path

import jinja2

from nfs_failover.drill.model import (
    SUMMARY_KEYS,
    ClientFigures,
    DrillReport,
    Mark,
    Phase,
    Sample,
)
from nfs_failover.files import write_atomically

TEMPLATES = Path(__file__).parent / "templates"
FILE_MODE = 0o644
MISSING = "—"
EN_DASH = "\u2013"  # between the two ends of a span

# The lab's zones, for a report whose lab facts do not name them.
FALLBACK_ZONES = {"site1": "az1", "dest1": "az2"}
LAB_REPLICA_KEY = re.compile(r"(?P<replica>[\w.-]+) \((?P<zone>[\w.-]+)\)")

# key: (words for people, unit); a unit of "s" formats the number as seconds.
FIGURES: dict[str, tuple[str, str]] = {
    "passed": ("Result", ""),
    "mode": ("Mode", ""),
    "grace_s": ("Grace period", "s"),
    "detection_s": ("Outage detected after", "s"),
    "rto_s": ("Recovery time (RTO)", "s"),
    "rto_overhead_s": ("RTO beyond the grace period", "s"),
    "break_s": ("Mirror break took", "s"),
    "write_unavailable_s": ("Writes unavailable for", "s"),
    "failback_s": ("Failback took", "s"),
    "failback_unavailable_s": ("Writes unavailable during failback", "s"),
    "writes_acknowledged": ("Writes acknowledged", "writes"),
    "writes_lost": ("Acknowledged writes lost", "writes"),
    "writes_preserved": ("Writes preserved", "writes"),
    "flaps": ("Flaps", ""),
    "false_failovers": ("False failovers", ""),
    "split_brain_instants": ("Split-brain instants", ""),
    "final_mirror_state": ("Final mirror state", ""),
    "report_html": ("HTML report", ""),
    "client_kind": ("Client hosts", ""),
}
SHOWN_ELSEWHERE = frozenset({"clients"})  # the page's per-client table

PHASE_COLOURS = {
    "baseline": "#dbeafe",
    "flaps": "#fef3c7",
    "outage": "#fecaca",
    "failover": "#fed7aa",
    "on-zone2": "#e9d5ff",
    "failback": "#fde68a",
    "back-on-zone1": "#bbf7d0",
}
OTHER_PHASE_COLOURS = ("#e2e8f0", "#cffafe", "#fbcfe8", "#d9f99d")

WRITE_OK = "#16a34a"
READ_OK = "#86efac"
FAILED = "#dc2626"
MARK_COLOUR = "#475569"
# A client's operations take the colour of the replica they went to (reads paler).
REPLICA_COLOURS = ("#2563eb", "#9333ea", "#0d9488", "#ca8a04", "#db2777", "#64748b")
READ_OPACITY = 0.45
ACTION_COLOUR = "#0f172a"
NOTHING_MOUNTED = "#ffffff"

# Geometry of the chart, in pixels.
LEFT = 120
RIGHT = 16
TOP = 8
ROW_H = 14  # one row of mark labels
MAX_LABEL_ROWS = 8
CHAR_W = 6.2  # average width of a character at 11 px, to keep labels apart
PHASE_H = 24
LANE_H = 40
LANE_GAP = 8
# A client's lane, top to bottom: its agent's actions, the replica it has mounted, its
# writes, its reads.
ACTION_H = 16
MOUNT_H = 6
CLIENT_ROW_H = 16
CLIENT_LANE_H = ACTION_H + MOUNT_H + 4 + 2 * CLIENT_ROW_H
SMALL_CHAR_W = 5.1  # at 9 px
LEGEND_ROW_H = 16
UNNAMED_CLIENT = "other"  # the lane of samples that name no client, beside named ones
FONT = "system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif"
TICK_STEPS = (1, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)


@dataclass(frozen=True)
class ReportFiles:
    """Where the report went."""

    json: Path
    html: Path
    svg: Path


def write_report(report: DrillReport, directory: Path) -> ReportFiles:
    """Write ``drill.json``, ``drill.html`` and ``timeline.svg`` into ``directory`` (created
    if missing), each atomically with mode 0644. Sets the summary's ``report_html`` first, so
    the JSON and the page both name the page. Raises OSError."""
    directory = directory.absolute()
    files = ReportFiles(
        json=directory / "drill.json",
        html=directory / "drill.html",
        svg=directory / "timeline.svg",
    )
    report.summary = replace(report.summary, report_html=str(files.html))
    svg = timeline_svg(report)
    directory.mkdir(parents=True, exist_ok=True)
    write_atomically(files.svg, svg + "\n", mode=FILE_MODE)
    write_atomically(files.html, render_html(report, svg), mode=FILE_MODE)
    # Last, so that a drill.json on disk means the whole report is there.
    text = json.dumps(report.to_json(), indent=2) + "\n"
    write_atomically(files.json, text, mode=FILE_MODE)
    return files


# -- HTML --------------------------------------------------------------------------------


def render_html(report: DrillReport, svg: str) -> str:
    """The page: figures, each client's figures, timeline, checks, phases and marks (and
    the clients' actions and mounts), notes and lab facts."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    verdict = "PASSED" if report.passed else "FAILED"
    mode = report.summary.mode
    passed_checks = sum(1 for c in report.checks if c.passed)
    return env.get_template("report.html").render(
        verdict=verdict,
        passed=report.passed,
        mode=MISSING if mode is None else str(mode),
        date=_date(report.started_at),
        figures=_figures(report.summary_json()),
        client_columns=[(header, tip) for header, tip, _ in CLIENT_COLUMNS],
        clients=[[cell(c) for _, _, cell in CLIENT_COLUMNS] for c in report.clients],
        lost=[(c.name, ", ".join(c.lost)) for c in report.clients if c.lost],
        svg=svg,
        checks=report.checks,
        checks_passed=passed_checks,
        events=_events(report.phases, report.marks, report.clients),
        client_events=any(c.actions or c.mounts for c in report.clients),
        notes=report.notes,
        lab=[(str(k), _lab_value(v)) for k, v in report.lab.items()],
        comparison=[
            (label, format_figure(row.get("seed")), format_figure(row.get("nfs-failover")))
            for label, row in report.comparison.items()
        ],
    )


def _date(started_at: float) -> str:
    if started_at <= 0:
        return MISSING
    return datetime.fromtimestamp(started_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _figures(summary: dict[str, object]) -> list[tuple[str, str]]:
    keys = list(SUMMARY_KEYS) + [k for k in summary if k not in SUMMARY_KEYS]
    rows = []
    for key in keys:
        if key in SHOWN_ELSEWHERE:
            continue
        label, unit = FIGURES.get(key, (key, ""))
        value = summary.get(key)
        if key == "passed" and value is not None:
            rows.append((label, "PASSED" if value else "FAILED"))
        else:
            rows.append((label, format_figure(value, unit)))
    return rows


def format_figure(value: object, unit: str = "") -> str:
    """A summary figure for people: "—" for None, yes/no, seconds to 0.1 s (0.01 below 1 s)."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if unit == "s" and isinstance(value, int | float):
        digits = 2 if abs(value) < 1 else 1
        return f"{value:.{digits}f} s"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _seconds(at: float) -> str:
    return f"{at:.1f} s"


@dataclass(frozen=True)
class Cell:
    """One cell of the clients' table; ``bad`` marks a figure that should have been zero."""

    text: str
    bad: bool = False


def _count(value: int) -> Cell:
    return Cell(str(value), value > 0)


def _hung(c: ClientFigures) -> Cell:
    if not c.hung_processes:
        return Cell("0")
    return Cell(f"{c.hung_processes} (longest {format_figure(c.hung_longest_s, 's')})", True)


def _writes(c: ClientFigures) -> Cell:
    text = f"{c.writes_acknowledged} / {c.writes_lost} / {c.writes_preserved}"
    return Cell(text, c.writes_lost > 0)


def _rows(c: ClientFigures) -> Cell:
    if c.rows_acknowledged == 0 and c.rows_lost == 0:
        return Cell(MISSING)
    return Cell(f"{c.rows_acknowledged} / {c.rows_lost}", c.rows_lost > 0)


def _database(c: ClientFigures) -> Cell:
    return Cell(MISSING if c.database is None else c.database, c.database not in (None, "ok"))


# The clients' table, one row per client: (header, what it means, the cell).
CLIENT_COLUMNS: tuple[tuple[str, str, Callable[[ClientFigures], Cell]], ...] = (
    ("Client", "the client host", lambda c: Cell(c.name)),
    (
        "RTO",
        "outage to its first acknowledged write (read-only: read) on zone 2",
        lambda c: Cell(format_figure(c.rto_s, "s")),
    ),
    (
        "Writes blocked",
        "last acknowledged write before the outage to the first after",
        lambda c: Cell(format_figure(c.write_blocked_s, "s")),
    ),
    (
        "Reads blocked",
        "last acknowledged read before the outage to the first after",
        lambda c: Cell(format_figure(c.read_blocked_s, "s")),
    ),
    ("Hung", "operations with no answer past the watchdog's limit, killed", _hung),
    (
        "Writes ack / lost / preserved",
        "files whose fsync returned / missing from the final source / kept by the failback",
        _writes,
    ),
    ("Rows ack / lost", "sqlite rows whose COMMIT returned / missing", _rows),
    ("Database", "pragma integrity_check on the final source", _database),
    (
        "Stale reads",
        "reads that missed a file or version they were owed",
        lambda c: _count(c.stale_reads),
    ),
    ("Hidden files", "the most owed files one listing missed", lambda c: _count(c.hidden_files)),
    (
        "Corrupt reads",
        "reads whose content was not what was written",
        lambda c: _count(c.corrupt_reads),
    ),
    (
        "Refused writes",
        "EROFS answers from a read-only replica",
        lambda c: Cell(str(c.writes_refused)),
    ),
    (
        "Back on source",
        "failback begins to its first acknowledged operation on zone 1",
        lambda c: Cell(format_figure(c.back_on_source_s, "s")),
    ),
)


def _events(
    phases: Iterable[Phase], marks: Iterable[Mark], clients: Iterable[ClientFigures] = ()
) -> list[dict[str, str]]:
    """Phases, marks and the clients' actions and mount changes, in time order."""
    rows: list[tuple[float, dict[str, str]]] = []
    for p in phases:
        when = f"{_seconds(p.start)} {EN_DASH} {_seconds(p.end)}"
        rows.append((p.start, {"kind": "phase", "name": p.name, "label": p.label, "at": when}))
    for m in marks:
        rows.append(
            (m.at, {"kind": "mark", "name": m.name, "label": m.label, "at": _seconds(m.at)})
        )
    rows += _client_events(clients)
    rows.sort(key=lambda row: row[0])
    return [row for _, row in rows]


def _client_events(clients: Iterable[ClientFigures]) -> list[tuple[float, dict[str, str]]]:
    rows: list[tuple[float, dict[str, str]]] = []
    for c in clients:
        for at, what, detail in _actions(c):
            label = f"{c.name}: {detail}" if detail else c.name
            rows.append((at, {"kind": "action", "name": what, "label": label, "at": _seconds(at)}))
        for at, replica in _mounts(c):
            label = f"{c.name} mounts {replica}" if replica else f"{c.name}: nothing mounted"
            rows.append(
                (at, {"kind": "mount", "name": "mount", "label": label, "at": _seconds(at)})
            )
    return rows


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _actions(c: ClientFigures) -> list[tuple[float, str, str]]:
    """The client's agent actions as (at, what, detail), those without a time left out."""
    out = []
    for action in c.actions:
        at = _number(action.get("at"))
        if at is not None:
            out.append((at, str(action.get("what") or "action"), str(action.get("detail") or "")))
    return sorted(out, key=lambda a: a[0])


def _mounts(c: ClientFigures) -> list[tuple[float, str | None]]:
    """The client's mount changes as (at, replica or None for nothing mounted), in order."""
    out = []
    for mount in c.mounts:
        at = _number(mount.get("at"))
        replica = mount.get("replica")
        if at is not None:
            out.append((at, None if replica is None else str(replica)))
    return sorted(out, key=lambda m: m[0])


def _lab_value(value: object) -> str:
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, default=str)
    return MISSING if value is None else str(value)


# -- SVG timeline ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scale:
    """Seconds since the drill began to x pixels."""

    t0: float
    t1: float
    left: float
    right: float

    def x(self, at: float) -> float:
        return self.left + (at - self.t0) / (self.t1 - self.t0) * (self.right - self.left)


@dataclass(frozen=True)
class _Lane:
    replica: str
    zone: str
    top: float


@dataclass(frozen=True)
class _ClientLane:
    client: str  # as the samples name it
    figures: ClientFigures | None
    top: float

    @property
    def mount_top(self) -> float:
        return self.top + ACTION_H

    @property
    def ticks_top(self) -> float:
        return self.top + ACTION_H + MOUNT_H + 4


@dataclass(frozen=True)
class _Replica:
    name: str
    zone: str
    colour: str


def timeline_svg(report: DrillReport, width: int = 960) -> str:
    """The drill as an SVG chart: phases on top, then one lane per client host (a report
    without clients: one lane of client operations per replica), dashed lines for the
    marks, seconds since the drill began along the bottom."""
    width = max(width, LEFT + RIGHT + 100)
    scale = _scale(report, width)
    label_rows = _place_mark_labels(report.marks, scale, width)
    rows = max((row for row, _, _ in label_rows), default=0) + 1
    phase_top = TOP + rows * ROW_H + 6
    lanes_top = phase_top + PHASE_H + 10
    clients = _client_lanes(report, lanes_top)
    if clients:
        replicas = _replica_colours(report)
        lanes_bottom = clients[-1].top + CLIENT_LANE_H
        body = _client_frames(clients, scale)
        body += _client_ticks(report.samples, clients, replicas, scale)
        overlay = _client_mounts(clients, replicas, scale) + _client_actions(clients, scale)
        legend, legend_rows = _client_legend(replicas, lanes_bottom + 50, width)
    else:
        lanes = [
            _Lane(replica, zone, lanes_top + i * (LANE_H + LANE_GAP))
            for i, (replica, zone) in enumerate(_replicas(report))
        ]
        lanes_bottom = lanes[-1].top + LANE_H
        body = [*_lanes(lanes, scale), *_ticks(report.samples, lanes, scale)]
        overlay, legend, legend_rows = [], _legend(lanes_bottom + 50), 1
    axis_y = lanes_bottom + 4
    height = axis_y + 46 + (legend_rows - 1) * LEGEND_ROW_H + 14
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height:.0f}" '
        f'viewBox="0 0 {width} {height:.0f}" role="img" font-family="{escape(FONT)}" '
        f'font-size="11">',
        "<title>Drill timeline</title>",
        f'<rect width="{width}" height="{height:.0f}" fill="#ffffff"/>',
        *_axis(scale, phase_top, axis_y),
        *_phases(report.phases, scale, phase_top),
        *body,
        *_marks(label_rows, scale, lanes_bottom),
        *overlay,
        *legend,
        "</svg>",
    ]
    return "\n".join(parts)


def _scale(report: DrillReport, width: int) -> _Scale:
    times = [0.0]
    times += [t for p in report.phases for t in (p.start, p.end)]
    times += [m.at for m in report.marks]
    times += [s.at for s in report.samples]
    for c in report.clients:
        times += [at for at, _, _ in _actions(c)] + [at for at, _ in _mounts(c)]
    t0, t1 = min(times), max(times)
    if t1 - t0 < 1:
        t1 = t0 + 1
    return _Scale(t0, t1, LEFT, width - RIGHT)


def _replicas(report: DrillReport) -> list[tuple[str, str]]:
    """(replica, zone) per lane: the replicas the lab facts name, in their order, then any
    other replica the samples saw, site1 and dest1 first."""
    lanes: dict[str, str] = {}
    zones = report.lab.get("zones")
    if isinstance(zones, list | tuple):
        for index, zone in enumerate(zones, start=1):
            if isinstance(zone, dict) and zone.get("replica"):
                lanes.setdefault(str(zone["replica"]), str(zone.get("name") or f"az{index}"))
    for key in report.lab:  # the drill's lab facts name each export "site1 (az1)"
        named = LAB_REPLICA_KEY.fullmatch(key)
        if named:
            lanes.setdefault(named["replica"], named["zone"])
    seen = list(dict.fromkeys(s.replica for s in report.samples))
    for replica in sorted(seen, key=lambda r: (r not in FALLBACK_ZONES, seen.index(r))):
        lanes.setdefault(replica, FALLBACK_ZONES.get(replica, ""))
    if not lanes:
        lanes = dict(FALLBACK_ZONES)
    return list(lanes.items())


def _axis(scale: _Scale, top: float, axis_y: float) -> list[str]:
    span = scale.t1 - scale.t0
    max_ticks = max(2, (scale.right - scale.left) / 80)
    step = next((s for s in TICK_STEPS if span / s <= max_ticks), TICK_STEPS[-1])
    out = [
        f'<line x1="{scale.left}" y1="{axis_y}" x2="{scale.right}" y2="{axis_y}" stroke="#94a3b8"/>'
    ]
    for n in range(math.ceil(scale.t0 / step), math.floor(scale.t1 / step) + 1):
        x = scale.x(n * step)
        out.append(
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{axis_y + 4}" stroke="#e2e8f0"/>'
        )
        out.append(
            f'<text x="{x:.1f}" y="{axis_y + 16}" text-anchor="middle" fill="#475569">'
            f"{n * step} s</text>"
        )
    middle = (scale.left + scale.right) / 2
    out.append(
        f'<text x="{middle:.1f}" y="{axis_y + 32}" text-anchor="middle" fill="#64748b">'
        "seconds since the drill began</text>"
    )
    return out


def _fit(label: str, room: float) -> str:
    """The label, shortened with an ellipsis to fit ``room`` pixels, or "" if it cannot."""
    chars = int(room / CHAR_W)
    if len(label) <= chars:
        return label
    return label[: chars - 1] + "…" if chars >= 3 else ""


def _phases(phases: Iterable[Phase], scale: _Scale, top: float) -> list[str]:
    out = []
    for i, phase in enumerate(phases):
        x0, x1 = scale.x(phase.start), scale.x(phase.end)
        w = max(x1 - x0, 1.0)
        colour = PHASE_COLOURS.get(phase.name, OTHER_PHASE_COLOURS[i % len(OTHER_PHASE_COLOURS)])
        tip = f"{phase.label}: {_seconds(phase.start)} {EN_DASH} {_seconds(phase.end)}"
        text = _fit(phase.label, w - 6)
        out.append(
            f'<g class="phase" data-name="{escape(phase.name)}"><title>{escape(tip)}</title>'
            f'<rect x="{x0:.1f}" y="{top}" width="{w:.1f}" height="{PHASE_H}" fill="{colour}" '
            'stroke="#ffffff"/>'
        )
        if text:
            out.append(
                f'<text x="{x0 + w / 2:.1f}" y="{top + PHASE_H / 2 + 4}" text-anchor="middle" '
                f'fill="#1e293b">{escape(text)}</text>'
            )
        out.append("</g>")
    return out


def _lanes(lanes: Iterable[_Lane], scale: _Scale) -> list[str]:
    out = []
    for lane in lanes:
        mid = lane.top + LANE_H / 2
        w = scale.right - scale.left
        out += [
            f'<rect x="{scale.left}" y="{lane.top}" width="{w}" height="{LANE_H}" '
            'fill="#f8fafc" stroke="#e2e8f0"/>',
            f'<line x1="{scale.left}" y1="{mid}" x2="{scale.right}" y2="{mid}" stroke="#eef2f6"/>',
            f'<text x="8" y="{mid - 3}" font-size="12" font-weight="600" fill="#0f172a">'
            f"{escape(_fit(lane.replica, LEFT - 50))}</text>",
            f'<text x="8" y="{mid + 11}" fill="#64748b">'
            f"{escape(_fit('zone ' + lane.zone if lane.zone else '', LEFT - 50))}</text>",
            f'<text x="{LEFT - 4}" y="{lane.top + 13}" text-anchor="end" font-size="9" '
            'fill="#94a3b8">write</text>',
            f'<text x="{LEFT - 4}" y="{lane.top + LANE_H - 6}" text-anchor="end" font-size="9" '
            'fill="#94a3b8">read</text>',
        ]
    return out


# (kind row, ok) -> class name, colour; drawn in this order so that red lies on top.
TICK_STYLES = (
    ((0, True), "write-ok", WRITE_OK),
    ((1, True), "read-ok", READ_OK),
    ((0, False), "write-failed", FAILED),
    ((1, False), "read-failed", FAILED),
)


def _ticks(samples: Iterable[Sample], lanes: list[_Lane], scale: _Scale) -> list[str]:
    """One path per lane and style; one tick per pixel column, however many samples."""
    lane_of = {lane.replica: i for i, lane in enumerate(lanes)}
    columns: dict[tuple[int, int, bool], set[int]] = {}
    for s in samples:
        index = lane_of.get(s.replica)
        if index is None:
            continue
        row = 0 if s.kind == "write" else 1
        columns.setdefault((index, row, s.ok), set()).add(int(scale.x(s.at)))
    out = []
    half = LANE_H / 2
    for (row, ok), name, colour in TICK_STYLES:
        for i, lane in enumerate(lanes):
            cols = columns.get((i, row, ok))
            if not cols:
                continue
            y = lane.top + row * half + 3
            d = "".join(f"M{c}.5 {y:g}v{half - 6:g}" for c in sorted(cols))
            out.append(
                f'<path class="tick {name}" data-replica="{escape(lane.replica)}" '
                f'stroke="{colour}" stroke-width="1" d="{d}"/>'
            )
    return out


def _place_mark_labels(
    marks: Iterable[Mark], scale: _Scale, width: int
) -> list[tuple[int, Mark, tuple[float, str]]]:
    """Stagger the mark labels over rows so that they do not overlap: (row, mark, (x, anchor))."""
    row_ends: list[float] = []
    placed = []
    for mark in sorted(marks, key=lambda m: m.at):
        x = scale.x(mark.at)
        w = len(mark.label) * CHAR_W
        start, anchor = (x + 3, "start") if x + 3 + w <= width - 2 else (x - 3 - w, "end")
        row = next((r for r, end in enumerate(row_ends) if end + 6 <= start), None)
        if row is None and len(row_ends) < MAX_LABEL_ROWS:
            row = len(row_ends)
            row_ends.append(start + w)
        elif row is None:  # too many to keep apart: overlap where it hurts least
            row = min(range(len(row_ends)), key=row_ends.__getitem__)
        row_ends[row] = max(row_ends[row], start + w)
        placed.append((row, mark, (x + 3 if anchor == "start" else x - 3, anchor)))
    return placed


def _marks(
    placed: list[tuple[int, Mark, tuple[float, str]]],
    scale: _Scale,
    bottom: float,
) -> list[str]:
    """All the dashed lines first, then the labels over them, each with a white halo."""
    lines = ['<g class="mark-lines">']
    labels = []
    for row, mark, (text_x, anchor) in placed:
        x = scale.x(mark.at)
        y = TOP + (row + 1) * ROW_H - 3
        tip = f"{mark.label}: {_seconds(mark.at)}"
        lines.append(
            f'<line x1="{x:.1f}" y1="{y - 9}" x2="{x:.1f}" y2="{bottom}" stroke="{MARK_COLOUR}" '
            'stroke-width="1" stroke-dasharray="4 3"/>'
        )
        labels.append(
            f'<g class="mark" data-name="{escape(mark.name)}"><title>{escape(tip)}</title>'
            f'<text x="{text_x:.1f}" y="{y}" text-anchor="{anchor}" fill="#334155" '
            'stroke="#ffffff" stroke-width="3" paint-order="stroke">'
            f"{escape(mark.label)}</text></g>"
        )
    return [*lines, "</g>", *labels]


def _legend(y: float) -> list[str]:
    items = (("write ok", WRITE_OK), ("read ok", READ_OK), ("failed", FAILED))
    out = []
    x = float(LEFT)
    for label, colour in items:
        out.append(
            f'<rect x="{x}" y="{y - 9}" width="3" height="11" fill="{colour}"/>'
            f'<text x="{x + 8}" y="{y}" fill="#334155">{label}</text>'
        )
        x += 16 + len(label) * CHAR_W + 14
    out.append(
        f'<line x1="{x}" y1="{y - 10}" x2="{x}" y2="{y + 2}" stroke="{MARK_COLOUR}" '
        f'stroke-dasharray="4 3"/><text x="{x + 6}" y="{y}" fill="#334155">event</text>'
    )
    return out


# -- The clients' lanes ------------------------------------------------------------------


def _client_lanes(report: DrillReport, top: float) -> list[_ClientLane]:
    """One lane per client host: those with figures, in their order, then any other the
    samples name. No lanes for a report without figures whose samples name no client."""
    names = list(
        dict.fromkeys([c.name for c in report.clients] + [s.client for s in report.samples])
    )
    if not any(names):
        return []
    figures = {c.name: c for c in report.clients}
    step = CLIENT_LANE_H + LANE_GAP
    return [_ClientLane(name, figures.get(name), top + i * step) for i, name in enumerate(names)]


def _replica_colours(report: DrillReport) -> dict[str, _Replica]:
    """A colour for each replica the lab names, the samples went to or a client mounted."""
    replicas = dict(_replicas(report))
    for c in report.clients:
        for _, replica in _mounts(c):
            if replica is not None:
                replicas.setdefault(replica, FALLBACK_ZONES.get(replica, ""))
    return {
        name: _Replica(name, zone, REPLICA_COLOURS[i % len(REPLICA_COLOURS)])
        for i, (name, zone) in enumerate(replicas.items())
    }


def _client_frames(lanes: Iterable[_ClientLane], scale: _Scale) -> list[str]:
    """Each lane's background, its client's name (and RTO) and the names of its rows."""
    out = []
    w = scale.right - scale.left
    for lane in lanes:
        ticks, mid = lane.ticks_top, lane.ticks_top + CLIENT_ROW_H
        rto = lane.figures.rto_s if lane.figures else None
        sub = "" if rto is None else "RTO " + format_figure(rto, "s")
        out += [
            f'<rect x="{scale.left}" y="{lane.mount_top}" width="{w}" height="{MOUNT_H}" '
            'fill="#f1f5f9"/>',
            f'<rect x="{scale.left}" y="{ticks}" width="{w}" height="{2 * CLIENT_ROW_H}" '
            'fill="#f8fafc" stroke="#e2e8f0"/>',
            f'<line x1="{scale.left}" y1="{mid}" x2="{scale.right}" y2="{mid}" stroke="#eef2f6"/>',
            f'<text x="8" y="{mid - 3}" font-size="12" font-weight="600" fill="#0f172a">'
            f"{escape(_fit(lane.client or UNNAMED_CLIENT, LEFT - 50))}</text>",
            f'<text x="8" y="{mid + 11}" fill="#64748b">{escape(sub)}</text>',
        ]
        rows = (
            ("agent", lane.top + 11),
            ("mount", lane.mount_top + 6),
            ("write", ticks + 12),
            ("read", ticks + 2 * CLIENT_ROW_H - 4),
        )
        out += [
            f'<text x="{LEFT - 4}" y="{y}" text-anchor="end" font-size="9" fill="#94a3b8">'
            f"{name}</text>"
            for name, y in rows
        ]
    return out


def _client_ticks(
    samples: Iterable[Sample],
    lanes: Sequence[_ClientLane],
    replicas: dict[str, _Replica],
    scale: _Scale,
) -> list[str]:
    """One path per lane, row and replica (failed: one per lane and row, drawn last, in
    red); one tick per pixel column, however many samples."""
    lane_of = {lane.client: i for i, lane in enumerate(lanes)}
    columns: dict[tuple[bool, int, int, str], set[int]] = {}
    for s in samples:
        index = lane_of.get(s.client)
        if index is None:
            continue
        row = 1 if s.kind == "read" else 0
        key = (not s.ok, index, row, s.replica if s.ok else "")
        columns.setdefault(key, set()).add(int(scale.x(s.at)))
    out = []
    for (failed, index, row, replica), cols in sorted(columns.items()):
        lane = lanes[index]
        y = lane.ticks_top + row * CLIENT_ROW_H + 2
        d = "".join(f"M{c}.5 {y:g}v{CLIENT_ROW_H - 4:g}" for c in sorted(cols))
        kind = "read" if row else "write"
        if failed:
            style = f'class="tick {kind}-failed" stroke="{FAILED}"'
        else:
            colour = replicas[replica].colour if replica in replicas else MARK_COLOUR
            paler = f' stroke-opacity="{READ_OPACITY}"' if row else ""
            style = (
                f'class="tick {kind}-ok" data-replica="{escape(replica)}" stroke="{colour}"{paler}'
            )
        out.append(f'<path {style} data-client="{escape(lane.client)}" stroke-width="1" d="{d}"/>')
    return out


def _client_mounts(
    lanes: Iterable[_ClientLane], replicas: dict[str, _Replica], scale: _Scale
) -> list[str]:
    """The replica each client had mounted, as a strip in its colour, from each change
    (a short dark line) to the next."""
    out = []
    for lane in lanes:
        changes = _mounts(lane.figures) if lane.figures else []
        ends = [at for at, _ in changes[1:]] + [scale.t1]
        for (at, replica), end in zip(changes, ends, strict=False):
            x0, x1 = scale.x(at), scale.x(end)
            if replica is None:
                tip, colour = f"{lane.client}: nothing mounted from {_seconds(at)}", NOTHING_MOUNTED
            else:
                when = f"{_seconds(at)} {EN_DASH} {_seconds(end)}"
                tip = f"{lane.client} mounts {replica}: {when}"
                colour = replicas[replica].colour if replica in replicas else MARK_COLOUR
            y = lane.mount_top
            out.append(
                f'<g class="mount" data-client="{escape(lane.client)}" '
                f'data-replica="{escape(replica or "")}"><title>{escape(tip)}</title>'
                f'<rect x="{x0:.1f}" y="{y}" width="{max(x1 - x0, 1.0):.1f}" height="{MOUNT_H}" '
                f'fill="{colour}"/><line x1="{x0:.1f}" y1="{y - 2}" x2="{x0:.1f}" '
                f'y2="{y + MOUNT_H + 2}" stroke="{ACTION_COLOUR}" stroke-width="1.5"/></g>'
            )
    return out


def _client_actions(lanes: Iterable[_ClientLane], scale: _Scale) -> list[str]:
    """A small triangle for each of the agent's actions on the client, named beside it
    where the name fits before the next one (always in its tooltip)."""
    out = []
    for lane in lanes:
        actions = _actions(lane.figures) if lane.figures else []
        xs = [scale.x(at) for at, _, _ in actions]
        for i, (at, what, detail) in enumerate(actions):
            x, y = xs[i], lane.top + 4
            room = (xs[i + 1] - 4 if i + 1 < len(xs) else scale.right + RIGHT) - (x + 5)
            name = what if len(what) * SMALL_CHAR_W <= room else ""
            tip = f"{lane.client} {what} at {_seconds(at)}" + (f": {detail}" if detail else "")
            text = (
                f'<text x="{x + 5:.1f}" y="{lane.top + 11}" font-size="9" fill="#334155">'
                f"{escape(name)}</text>"
                if name
                else ""
            )
            out.append(
                f'<g class="action" data-client="{escape(lane.client)}" data-what="{escape(what)}">'
                f'<title>{escape(tip)}</title><path d="M{x - 3.5:.1f} {y}h7l-3.5 7z" '
                f'fill="{ACTION_COLOUR}"/>{text}</g>'
            )
    return out


def _client_legend(replicas: dict[str, _Replica], y: float, width: int) -> tuple[list[str], int]:
    """The legend of the clients' lanes, wrapped to the chart's width: (parts, rows)."""
    items: list[tuple[str, str]] = []  # (swatch, label)
    for r in replicas.values():
        swatch = (
            f'<rect x="0" y="-9" width="3" height="11" fill="{r.colour}"/>'
            f'<rect x="5" y="-9" width="3" height="11" fill="{r.colour}" '
            f'fill-opacity="{READ_OPACITY}"/>'
        )
        items.append((swatch, f"{r.name} ({r.zone})" if r.zone else r.name))
    items += [
        (f'<rect x="0" y="-9" width="3" height="11" fill="{FAILED}"/>', "failed"),
        (f'<path d="M0 -8h7l-3.5 7z" fill="{ACTION_COLOUR}"/>', "agent action"),
        (
            f'<line x1="0" y1="-10" x2="0" y2="2" stroke="{ACTION_COLOUR}" stroke-width="1.5"/>'
            f'<rect x="1" y="-7" width="7" height="{MOUNT_H}" fill="{REPLICA_COLOURS[0]}"/>',
            "mount change",
        ),
        (
            f'<line x1="4" y1="-10" x2="4" y2="2" stroke="{MARK_COLOUR}" stroke-dasharray="4 3"/>',
            "event",
        ),
    ]
    out, x, row = [], float(LEFT), 0
    for swatch, label in items:
        w = 16 + len(label) * CHAR_W + 14
        if x + w > width - RIGHT and x > LEFT:
            x, row = float(LEFT), row + 1
        out.append(
            f'<g class="legend" transform="translate({x:.1f} {y + row * LEGEND_ROW_H})">{swatch}'
            f'<text x="14" y="0" fill="#334155">{escape(label)}</text></g>'
        )
        x += w
    return out, row + 1
