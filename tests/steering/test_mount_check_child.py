"""The check child: its report of one statvfs, and that it runs from its file alone."""

from __future__ import annotations

import errno
import re
import subprocess
import sys
from pathlib import Path

from nfs_failover.steering import mount_check_child
from nfs_failover.steering.children import CHILD


def test_the_child_reports_estale_by_number_and_name() -> None:
    def stale(path: str) -> object:
        raise OSError(errno.ESTALE, "Stale file handle", path)

    assert mount_check_child.check("/misc/crr", statvfs=stale) == "error 116 ESTALE"


def test_the_child_reports_a_successful_statvfs_with_its_latency() -> None:
    assert re.fullmatch(r"ok \d+\.\d{6}", mount_check_child.check("/", statvfs=lambda p: None))


def test_the_child_runs_isolated_from_its_file_alone(tmp_path: Path) -> None:
    argv = [sys.executable, "-I", "-S", str(CHILD), str(tmp_path / "missing")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)

    assert (done.returncode, done.stdout) == (0, "error 2 ENOENT\n")
