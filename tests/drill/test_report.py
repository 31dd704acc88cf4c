"""The drill report: three files, escaped text, and a timeline that stays small."""

from __future__ import annotations

import json
import re
import stat
import xml.etree.ElementTree as ET
from pathlib import Path

from nfs_failover.drill.model import SUMMARY_KEYS, Check, DrillReport, Mark, Phase, Sample
from nfs_failover.drill.report import ReportFiles, timeline_svg, write_report

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = '<script>alert("x")</script>'

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


def summary(**changes: object) -> dict[str, object]:
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
    return figures


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


def tick_columns(svg: str, css_class: str) -> list[float]:
    root = ET.fromstring(svg)
    xs: list[float] = []
    for path in root.iter(f"{SVG}path"):
        if css_class in path.get("class", "").split():
            xs += [float(x) for x in re.findall(r"M([\d.]+) ", path.get("d", ""))]
    return xs


def test_writes_three_files_readable_by_all(tmp_path: Path) -> None:
    files = write_report(drill(), tmp_path / "reports" / "run1")
    assert files == ReportFiles(
        json=tmp_path / "reports/run1/drill.json",
        html=tmp_path / "reports/run1/drill.html",
        svg=tmp_path / "reports/run1/timeline.svg",
    )
    for path in (files.json, files.html, files.svg):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_json_round_trips_with_the_stable_summary_keys(tmp_path: Path) -> None:
    report = drill()
    files = write_report(report, tmp_path)
    saved = json.loads(files.json.read_text())
    assert saved == json.loads(json.dumps(report.to_json()))
    assert tuple(saved["summary"]) == SUMMARY_KEYS
    assert saved["summary"]["report_html"] == str(files.html)
    assert len(saved["samples"]) == 3000
    assert str(files.html) in files.html.read_text()


def test_html_is_self_contained_and_embeds_the_same_svg(tmp_path: Path) -> None:
    files = write_report(drill(), tmp_path)
    html = files.html.read_text()
    assert files.svg.read_text().strip() in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "@import" not in html
    assert "<script" not in html


def test_html_escapes_hostile_text(tmp_path: Path) -> None:
    report = drill()
    report.checks.append(Check(HOSTILE, False, f"detail {HOSTILE}"))
    report.notes.append(HOSTILE)
    report.phases.append(Phase("evil", HOSTILE, 60.0, 61.0))
    report.marks.append(Mark("evil", HOSTILE, 59.0))
    report.lab["owner"] = HOSTILE
    html = write_report(report, tmp_path).html.read_text()
    assert "<script" not in html
    assert "&lt;script&gt;" in html
    ET.fromstring(timeline_svg(report))  # still well-formed


def test_failed_report_says_failed(tmp_path: Path) -> None:
    html = write_report(drill(passed=False), tmp_path).html.read_text()
    assert "FAILED" in html
    assert "PASSED" not in html


def test_passed_report_shows_verdict_mode_and_date(tmp_path: Path) -> None:
    html = write_report(drill(mode="manual"), tmp_path).html.read_text()
    assert "PASSED" in html
    assert "FAILED" not in html
    assert "manual" in html
    assert "2025-11-25" in html


def test_missing_figures_render_as_a_dash(tmp_path: Path) -> None:
    html = write_report(drill(failback_s=None, rto_overhead_s=None), tmp_path).html.read_text()
    assert re.search(r"Failback took</td><td[^>]*>—</td>", html)
    assert re.search(r"RTO beyond the grace period</td><td[^>]*>—</td>", html)
    assert re.search(r"Recovery time \(RTO\)</td><td[^>]*>17.5 s</td>", html)


def test_every_phase_and_mark_label_is_in_the_svg() -> None:
    svg = timeline_svg(drill())
    for label in [p.label for p in PHASES] + [m.label for m in MARKS]:
        assert label in svg


def test_svg_names_both_replicas() -> None:
    svg = timeline_svg(drill())
    assert ">site1<" in svg
    assert ">dest1<" in svg


def test_svg_stays_small_for_many_samples() -> None:
    svg = timeline_svg(drill(count=20_000))
    ET.fromstring(svg)
    assert len(svg.encode()) < 400_000


def test_svg_size_does_not_grow_with_samples_in_the_same_columns() -> None:
    assert len(timeline_svg(drill(count=50_000))) == len(timeline_svg(drill(count=100_000)))


def test_later_samples_are_drawn_further_right() -> None:
    report = drill(count=0)
    report.samples = [Sample(1.0, "site1", "write", True), Sample(10.0, "site1", "write", False)]
    svg = timeline_svg(report)
    (early,) = tick_columns(svg, "write-ok")
    (late,) = tick_columns(svg, "write-failed")
    assert late > early


def test_failures_in_the_outage_are_red_ticks() -> None:
    svg = timeline_svg(drill())
    failed = tick_columns(svg, "write-failed") + tick_columns(svg, "read-failed")
    ok = tick_columns(svg, "write-ok")
    assert failed
    assert max(ok) > max(failed) > min(failed) > min(ok)


def test_many_marks_at_the_same_instant_get_their_own_rows() -> None:
    report = drill()
    report.marks = [Mark(f"m{i}", f"Event number {i}", 20.0) for i in range(4)]
    root = ET.fromstring(timeline_svg(report))
    ys = {
        text.get("y")
        for group in root.iter(f"{SVG}g")
        if group.get("class") == "mark"
        for text in group.iter(f"{SVG}text")
    }
    assert len(ys) == 4


def test_an_empty_report_still_draws_a_chart() -> None:
    ET.fromstring(timeline_svg(DrillReport(summary={})))


def test_lanes_follow_the_zones_the_lab_names() -> None:
    report = drill(count=0)
    report.lab = {"state folder": "/tmp/lab", "alpha (az1)": "x:/a", "beta (az2)": "y:/b"}
    report.samples = [Sample(1.0, "beta", "write", True)]
    svg = timeline_svg(report)
    assert svg.index(">alpha<") < svg.index(">beta<")
    assert ">zone az2<" in svg
    assert ">site1<" not in svg
