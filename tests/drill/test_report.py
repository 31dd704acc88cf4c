"""The drill report: three files, escaped text, and a timeline that stays small."""

from __future__ import annotations

import json
import re
import stat
import xml.etree.ElementTree as ET
from pathlib import Path

from nfs_failover.drill.model import (
    SUMMARY_KEYS,
    Check,
    DrillReport,
    Mark,
    Phase,
    Sample,
    Summary,
)
from nfs_failover.drill.report import ReportFiles, timeline_svg, write_report
from tests.drill.report_helpers import MARKS, PHASES, client_figures, clients_drill, drill

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = '<script>alert("x")</script>'


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
    ET.fromstring(
        timeline_svg(DrillReport(summary=Summary(passed=False, mode="read-write", grace_s=5.0)))
    )


def test_lanes_follow_the_zones_the_lab_names() -> None:
    report = drill(count=0)
    report.lab = {"state folder": "/tmp/lab", "alpha (az1)": "x:/a", "beta (az2)": "y:/b"}
    report.samples = [Sample(1.0, "beta", "write", True)]
    svg = timeline_svg(report)
    assert svg.index(">alpha<") < svg.index(">beta<")
    assert ">zone az2<" in svg
    assert ">site1<" not in svg


def test_a_report_without_clients_has_no_clients_table_and_lanes_per_replica(
    tmp_path: Path,
) -> None:
    html = write_report(drill(), tmp_path).html.read_text()
    assert "<h2>Clients</h2>" not in html
    assert 'class="tick write-ok" data-replica="site1"' in html
    assert "data-client" not in html


def test_the_clients_table_has_a_row_per_client(tmp_path: Path) -> None:
    html = write_report(clients_drill(), tmp_path).html.read_text()
    table = html[
        html.index('<table class="clients">') : html.index("</table>", html.index("<h2>Clients"))
    ]
    rows = re.findall(r"<tr>\s*<td[^>]*>(client\d)</td>", table)
    assert rows == ["client1", "client2"]
    assert "19.0 s" in table
    assert "750 / 0 / 12" in table
    assert re.search(r'<td class="num bad">1 \(longest 31.0 s\)</td>', table)


def test_the_figures_table_leaves_the_clients_to_their_own_table(tmp_path: Path) -> None:
    html = write_report(clients_drill(), tmp_path).html.read_text()
    assert re.search(r"Client hosts</td><td[^>]*>kernel</td>", html)
    assert "[{" not in html
    assert "&#39;rto_s&#39;" not in html


def test_lost_writes_and_a_damaged_database_are_shown_as_bad(tmp_path: Path) -> None:
    report = clients_drill()
    report.clients[0] = client_figures(
        "client1", writes_lost=2, database="row 3 missing from index", lost=("w17", "w18")
    )
    html = write_report(report, tmp_path).html.read_text()
    assert '<td class="num bad">750 / 2 / 12</td>' in html
    assert '<td class="num bad">row 3 missing from index</td>' in html
    assert "client1 lost:</span> <code>w17, w18</code>" in html


def test_client_actions_and_mounts_are_listed_with_the_events(tmp_path: Path) -> None:
    html = write_report(clients_drill(), tmp_path).html.read_text()
    assert (
        "<td>action</td><td><code>steered</code></td><td>client2: map reloaded: dest1</td>" in html
    )
    assert '<td>client1 mounts dest1</td><td class="num">27.2 s</td>' in html
    assert "client1: nothing mounted" in html


def test_svg_has_a_lane_per_client_with_ticks_coloured_by_replica() -> None:
    root = ET.fromstring(timeline_svg(clients_drill()))
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "client1" in texts
    assert "client2" in texts
    colours = {
        (p.get("data-client"), p.get("data-replica")): p.get("stroke")
        for p in root.iter(f"{SVG}path")
        if "write-ok" in p.get("class", "").split()
    }
    assert set(colours) == {(c, r) for c in ("client1", "client2") for r in ("site1", "dest1")}
    assert colours["client1", "site1"] == colours["client2", "site1"]
    assert colours["client1", "site1"] != colours["client1", "dest1"]


def test_svg_marks_each_clients_actions_and_mount_changes() -> None:
    root = ET.fromstring(timeline_svg(clients_drill()))
    groups = list(root.iter(f"{SVG}g"))
    actions = [g for g in groups if g.get("class") == "action"]
    mounts = [g for g in groups if g.get("class") == "mount"]
    assert len(actions) == 6
    assert len(mounts) == 8
    tips = [g.findtext(f"{SVG}title") for g in actions + mounts]
    assert "client2 steered at 26.5 s: map reloaded: dest1" in tips
    assert "client1 mounts dest1: 27.2 s \u2013 52.0 s" in tips
    assert "client1: nothing mounted from 26.6 s" in tips


def test_action_names_that_would_overlap_stay_in_their_tooltip() -> None:
    root = ET.fromstring(timeline_svg(clients_drill()))
    client1 = [
        g
        for g in root.iter(f"{SVG}g")
        if g.get("class") == "action" and g.get("data-client") == "client1"
    ]
    labels = [g.findtext(f"{SVG}text") for g in client1]
    assert labels == [None, "unmounted", "steered"]  # the first is 0.1 s before the second


def test_failed_client_operations_are_red_on_top() -> None:
    svg = timeline_svg(clients_drill())
    assert svg.index("write-failed") > svg.rindex("write-ok")
    failed = tick_columns(svg, "write-failed") + tick_columns(svg, "read-failed")
    ok = tick_columns(svg, "write-ok")
    assert max(ok) > max(failed) > min(failed) > min(ok)


def test_client_lanes_escape_hostile_text(tmp_path: Path) -> None:
    report = clients_drill()
    hostile = client_figures(
        HOSTILE,
        actions=({"at": 20.0, "what": HOSTILE, "detail": HOSTILE},),
        mounts=({"at": 21.0, "replica": HOSTILE},),
        database=HOSTILE,
        lost=(HOSTILE,),
    )
    report.clients.append(hostile)
    report.samples.append(Sample(22.0, HOSTILE, "write", True, HOSTILE))
    html = write_report(report, tmp_path).html.read_text()
    assert "<script" not in html
    assert "&lt;script&gt;" in html
    ET.fromstring(timeline_svg(report))


def test_samples_naming_no_client_beside_named_ones_get_a_lane_of_their_own() -> None:
    report = clients_drill(count=0)
    report.samples = [Sample(1.0, "site1", "write", True, ""), Sample(2.0, "site1", "read", True)]
    root = ET.fromstring(timeline_svg(report))
    assert "other" in [t.text for t in root.iter(f"{SVG}text")]


def test_svg_with_clients_stays_small_for_many_samples() -> None:
    svg = timeline_svg(clients_drill(count=20_000))
    ET.fromstring(svg)
    assert len(svg.encode()) < 400_000
    assert len(timeline_svg(clients_drill(count=50_000))) == len(
        timeline_svg(clients_drill(count=100_000))
    )


def test_the_legend_wraps_to_the_charts_width() -> None:
    report = clients_drill(count=0)
    report.samples = [
        Sample(1.0, f"replica-with-a-long-name-{i}", "write", True, "client1") for i in range(8)
    ]
    root = ET.fromstring(timeline_svg(report))
    rows = {
        g.get("transform", "").split()[-1]
        for g in root.iter(f"{SVG}g")
        if g.get("class") == "legend"
    }
    assert len(rows) > 1
    height = float(root.get("height", "0"))
    assert max(float(row.rstrip(")")) for row in rows) < height
