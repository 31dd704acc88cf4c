"""The drill end to end on a lab of its own: real zones, automount, controller, workload.

Each drill brings its lab up and, since the lab was not up before, takes it down again.
Grace periods are short here to keep the suite quick; bench/failover.py runs the default.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from nfs_failover import aio
from nfs_failover.config import Mode
from nfs_failover.drill.model import SUMMARY_KEYS, DrillReport
from nfs_failover.drill.options import DrillOptions
from nfs_failover.drill.run import Drill
from nfs_failover.lab import Lab
from nfs_failover.lab.lab import MARKER, STATE_DIR_ENV
from nfs_failover.store import SqliteStore
from tests.helpers import CLI, fresh_lab, require_lab

DRILL_TAG, DRILL_SLOT = "d", 44
pytestmark = pytest.mark.lab

QUICK = {"grace": 2.0, "schedule": 2.0, "steady": 1.0}


@pytest.fixture
def drill_lab(lab: Lab) -> Lab:
    """The session's lab and its client host: a drill leaves a lab it did not bring up
    running, with both zones reachable again."""
    return lab


def test_a_read_write_drill_fails_over_and_back_and_loses_nothing(drill_lab: Lab) -> None:
    # No transfer between the baseline and the outage: its writes must be preserved.
    drill = Drill(drill_lab, DrillOptions(**{**QUICK, "schedule": 60.0}, flaps=2))
    report = run_drill(drill)
    summary = report.summary_json()
    assert [(c.name, c.detail) for c in report.checks if not c.passed] == []
    assert summary["passed"] is True
    assert summary["writes_lost"] == 0 and summary["split_brain_instants"] == 0
    assert summary["false_failovers"] == 0 and summary["flaps"] == 2
    assert summary["final_mirror_state"] == "mirrored"
    # The grace holds: nothing moved before it, and the client wrote on zone 2 after.
    assert isinstance(summary["detection_s"], float) and summary["detection_s"] >= 2.0
    assert isinstance(summary["rto_s"], float) and summary["rto_s"] > summary["detection_s"]
    assert isinstance(summary["writes_acknowledged"], int) and summary["writes_acknowledged"] > 20
    # Writes made on zone 1 after its last transfer were preserved, not lost.
    assert isinstance(summary["writes_preserved"], int) and summary["writes_preserved"] > 0
    zones = {s.replica for s in report.samples if s.ok and s.kind == "write"}
    assert zones == {"site1", "dest1"}
    # Both client hosts' applications: files, rows, reads, all verified.
    assert summary["client_kind"] == "kernel"
    clients = {c.name: c for c in report.clients}
    assert sorted(clients) == ["client1", "client2"]
    assert [c["name"] for c in summary["clients"]] == ["client1", "client2"]  # type: ignore[union-attr]
    for client in clients.values():
        assert client.writes_acknowledged > 0 and client.rows_acknowledged > 0, client
        assert client.writes_lost == client.rows_lost == 0, client
        assert client.database == "ok" and client.stale_reads == client.corrupt_reads == 0
        assert isinstance(client.rto_s, float) and client.rto_s > summary["detection_s"]
        # Its applications hung on the dead zone until the watchdog killed them.
        assert client.hung_processes >= 1, client
        # automount mounted zone 1, then zone 2, then zone 1 again; the agent forced the
        # unmount of the fenced zone 1 (the failback's, of zone 2, may still be being
        # reported when the drill ends).
        replicas = [m["replica"] for m in client.mounts if m["replica"]]
        assert replicas == ["site1", "dest1", "site1"], client.mounts
        forced = [str(a["detail"]) for a in client.actions if a["what"] == "unmounted"]
        assert forced[0].startswith(
            "unmounted (forced, lazily) /misc/crr: mounted from site1, which is fenced"
        ), client.actions
    # One failover and one failback in the journal.
    store = SqliteStore(drill.workdir / "state.db")
    kinds = [
        e.kind for e in store.events("crr") if e.step == "check-replication" and e.phase == "before"
    ]
    assert kinds == ["failover"]
    last = store.last_workflow("crr")
    assert last is not None and last.kind == "failback" and last.status == "done"


def test_a_read_only_drill_reads_from_zone_2_during_the_outage(drill_lab: Lab) -> None:
    report = run_drill(Drill(drill_lab, DrillOptions(mode=Mode.READ_ONLY, **QUICK)))
    summary = report.summary_json()
    assert summary["passed"] is True, [c for c in report.checks if not c.passed]
    assert summary["mode"] == "read-only"
    assert summary["break_s"] is None and summary["write_unavailable_s"] is None
    assert summary["writes_acknowledged"] == 0 and summary["writes_lost"] == 0
    reads = {s.replica for s in report.samples if s.ok and s.kind == "read"}
    assert reads == {"site1", "dest1"}
    assert not [s for s in report.samples if s.kind == "write"]
    for client in report.clients:
        # The files written before were read back intact on both zones.
        assert client.corrupt_reads == 0 and isinstance(client.rto_s, float), client
    assert [z.state for z in drill_lab.status().zones] == ["up", "up"]


def test_a_drill_that_cannot_fail_over_in_time_fails_with_the_reason(drill_lab: Lab) -> None:
    # The grace outlasts the phase's deadline: the client never writes on zone 2 in time.
    options = DrillOptions(grace=15.0, schedule=2.0, steady=0.5, phase_timeout=6.0)
    report = run_drill(Drill(drill_lab, options))
    assert report.summary.passed is False
    failed = {c.name: c.detail for c in report.checks if not c.passed}
    assert "did a successful write on zone 2" in failed["the drill ran to its end"]
    assert report.summary.rto_s is None and report.summary.writes_lost == 0
    assert [z.state for z in drill_lab.status().zones] == ["up", "up"]  # restored all the same


def test_the_cli_prints_the_stable_json_and_writes_the_report(tmp_path: Path) -> None:
    require_lab()
    state = tmp_path / "lab"
    fresh_lab(state, DRILL_TAG, DRILL_SLOT)
    state.mkdir(parents=True)
    (state / MARKER).write_text(json.dumps({"tag": DRILL_TAG, "slot": DRILL_SLOT}))
    report_dir = tmp_path / "report"
    done = subprocess.run(
        [
            *CLI,
            "drill",
            "--json",
            "--grace",
            "2s",
            "--schedule",
            "2s",
            "--clients",
            "1",
            "--report",
            str(report_dir),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, STATE_DIR_ENV: str(state)},
    )
    assert done.returncode == 0, _failed_checks(report_dir) or done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert tuple(summary) == SUMMARY_KEYS
    assert summary["passed"] is True and summary["grace_s"] == 2.0
    assert summary["client_kind"] == "kernel" and len(summary["clients"]) == 1
    assert summary["report_html"] == str(report_dir.resolve() / "drill.html")
    saved = json.loads((report_dir / "drill.json").read_text())
    assert saved["summary"] == summary
    assert "zone 1 cut off" in (report_dir / "drill.html").read_text()
    assert "drill:" in done.stderr  # progress lines when stderr is not a terminal
    assert not Path("/run/netns", f"nfo{DRILL_TAG}-az1").exists()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--grace", "banana"], "--grace"),
        (["--mode", "both"], "--mode"),
        (["--flaps", "-1"], "--flaps"),
        (["--schedule", "0s"], "--schedule"),
        (["--nfs-version", "2"], "--nfs-version"),
        (["--clients", "0"], "--clients"),
        (["--mount-options", "rw,vers=3"], "--mount-options"),
        (["--mount-options", "rw;rm -rf /"], "--mount-options"),
        (["--hang-after", "never"], "--hang-after"),
        (["--compare", "autofs"], "--compare"),
        (["--operator-delay", "0s"], "--operator-delay"),
    ],
)
def test_bad_options_are_refused_naming_the_option(args: list[str], named: str) -> None:
    done = subprocess.run(
        [*CLI, "drill", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert named in done.stderr


def run_drill(drill: Drill) -> DrillReport:
    return aio.run(drill.run())


def test_a_drill_whose_client_host_cannot_be_had_says_why_in_one_line_with_a_report(
    tmp_path: Path,
) -> None:

    require_lab()
    state = tmp_path / "lab"
    state.mkdir()
    (state / MARKER).write_text(json.dumps({"tag": DRILL_TAG, "slot": DRILL_SLOT}))
    report_dir = tmp_path / "report"
    done = subprocess.run(
        [*CLI, "drill", "--report", str(report_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, STATE_DIR_ENV: str(state), "NFS_FAILOVER_KERNEL_DIR": str(tmp_path)},
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("nfs-failover:")]
    assert line.startswith(f"nfs-failover: the drill stopped: no client-host kernel in {tmp_path}")
    saved = json.loads((report_dir / "drill.json").read_text())
    assert saved["summary"]["passed"] is False
    assert "no client-host kernel" in saved["checks"][0]["detail"]
    assert (report_dir / "drill.html").exists()


def _failed_checks(report_dir: Path) -> str:
    """The checks a drill failed, with their evidence, from its report (if it wrote one)."""
    try:
        checks = json.loads((report_dir / "drill.json").read_text())["checks"]
    except (OSError, ValueError, KeyError):
        return ""
    return "; ".join(f"{c['name']}: {c['detail']}" for c in checks if not c["passed"])
