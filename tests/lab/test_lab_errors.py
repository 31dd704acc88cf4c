"""The lab refuses clearly when it cannot work: not root, or a package missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from nfs_failover.errors import LabError
from nfs_failover.lab import Lab, system
from tests.helpers import CLI


def test_a_missing_tool_is_named_with_its_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(system.TOOLS, "no-such-tool-nfo", "nfo-missing-package")
    with pytest.raises(LabError) as refused:
        system.require_tools()
    message = str(refused.value)
    assert "no-such-tool-nfo (package nfo-missing-package)" in message
    assert "apt-get install" in message


def test_lab_tags_and_slots_that_would_collide_or_overflow_are_refused(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="lab tag 'TOO-LONG'"):
        Lab(tmp_path, tag="TOO-LONG")
    with pytest.raises(LabError, match="lab slot 99"):
        Lab(tmp_path, slot=99)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
def test_lab_up_as_an_ordinary_user_says_it_needs_root_and_changes_nothing(
    tmp_path: Path,
) -> None:
    state = tmp_path / "lab"
    done = subprocess.run(
        # Nobody, with only the right to read and search folders, so that it can import the
        # package wherever the checkout lives (often a folder only root may enter).
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=+dac_read_search",
            "--ambient-caps=+dac_read_search",
            *CLI,
            "lab",
            "up",
            "--state-dir",
            str(state),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("nfs-failover: the lab needs root")
    assert not state.exists()
