"""Atomic writes: exact modes, and nothing written when nothing changed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from nfs_failover.files import write_atomically


def test_a_write_gets_exactly_its_mode_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        assert write_atomically(tmp_path / "map", "crr -fstype=nfs a:/b\n", mode=0o644)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "map").stat().st_mode) == 0o644
    assert write_atomically(tmp_path / "secret", "token\n", mode=0o600)
    assert stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o600


def test_the_same_content_is_not_written_again(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "file"
    assert write_atomically(path, "one\n", mode=0o600)
    before = path.stat().st_ino
    assert not write_atomically(path, "one\n", mode=0o600)
    assert path.stat().st_ino == before
    assert write_atomically(path, "two\n", mode=0o600)
    assert path.read_text() == "two\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["file"]  # no temporary left
