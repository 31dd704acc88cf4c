"""The command line as a user meets it: exit codes and one-line errors, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent / "examples"


def nfs_failover(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nfs_failover", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_check_config_summarises_a_valid_file_in_one_line() -> None:
    done = nfs_failover("check-config", str(EXAMPLES / "crr.yaml"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1
    assert done.stdout.startswith(f"{EXAMPLES / 'crr.yaml'}: 1 volume (1 read-write)")


def test_check_config_prints_one_line_per_problem_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "crr.yaml"
    bad.write_text(
        "volumes:\n  - name: crr\n    mode: rw\n    replicas:\n"
        '      - {name: a, export: "10.2.13.5"}\n'
    )
    done = nfs_failover("check-config", str(bad))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f'{bad}: volumes[0].mode: expected one of "read-write", "read-only", got "rw"',
        f'{bad}: volumes[0].replicas[0].export: expected HOST:/PATH, got "10.2.13.5"',
        f"{bad}: volumes[0].replication: missing",
    ]


def test_probe_refuses_a_malformed_export_before_sending_anything() -> None:
    done = nfs_failover("probe", "10.1.13.5")
    assert done.returncode == 2
    assert done.stderr == 'probe: expected HOST:/PATH, got "10.1.13.5"\n'


def test_probe_refuses_a_malformed_timeout() -> None:
    done = nfs_failover("probe", "198.18.1.5:/crr-site1", "--timeout", "soon")
    assert done.returncode == 2
    assert done.stderr == '--timeout: expected a duration such as 10s, 5m or 1h, got "soon"\n'


def test_probe_without_targets_says_what_it_needs() -> None:
    done = nfs_failover("probe")
    assert done.returncode == 2
    assert "HOST:/PATH" in done.stderr
    assert "Traceback" not in done.stderr


def test_lab_commands_name_an_unknown_zone() -> None:
    done = nfs_failover("lab", "restore", "az9", "--state-dir", "/nonexistent/lab")
    assert done.returncode == 1
    assert "unknown zone 'az9'" in done.stderr
    assert "Traceback" not in done.stderr
