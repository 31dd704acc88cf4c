"""What a user gets from `pip install nfs-failover`: the wheel, without extras, in a venv of
its own, must give a CLI that runs (every runtime import from a runtime dependency)."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.helpers import REPO


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `nfs-failover` of a fresh venv holding the built wheel and its dependencies."""
    work = tmp_path_factory.mktemp("packaging")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "-w",
            str(work / "dist"),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=600,
        cwd=work,
    )
    (wheel,) = (work / "dist").glob("nfs_failover-*.whl")
    venv.create(work / "venv", with_pip=True)
    subprocess.run(
        [str(work / "venv/bin/python"), "-m", "pip", "install", "-q", str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
        cwd=work,
    )
    return work / "venv/bin/nfs-failover"


def run(cli: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(cli), *args], capture_output=True, text=True, timeout=120, check=False, cwd="/"
    )


def test_the_installed_cli_prints_its_help(installed: Path) -> None:
    done = run(installed, "--help")
    assert done.returncode == 0, done.stderr
    assert "drill" in done.stdout and "lab" in done.stdout


def test_the_installed_cli_checks_a_config(installed: Path) -> None:
    done = run(installed, "check-config", str(REPO / "deploy/config.example.yaml"))
    assert done.returncode == 0, done.stderr


def test_the_installed_cli_lints_autofs_maps(installed: Path) -> None:
    data = REPO / "tests/steering/data"
    done = run(installed, "autofs", "lint", str(data / "seed-auto.misc"))
    assert done.returncode == 0, done.stdout + done.stderr
    broken = run(installed, "autofs", "lint", str(data / "broken.misc"))
    assert broken.returncode == 1 and "broken.misc:" in broken.stdout + broken.stderr
