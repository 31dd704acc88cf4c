"""The mount table: mountinfo lines parsed with their escapes, malformed ones skipped with
their reason, and the NFS mounts among them."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nfs_failover.errors import SteeringError
from nfs_failover.steering.mountinfo import MountInfo, nfs_mounts, parse_mountinfo, read_mounts
from tests.steering.mount_helpers import nfs_line, write_mountinfo

MOUNTINFO = (
    "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
    "36 22 0:52 / /misc/crr rw,nosuid,relatime shared:7 master:1 - nfs 10.1.13.5:/crr-site1"
    " rw,vers=3,hard,proto=tcp,addr=10.1.13.5\n"
    "37 22 0:53 /sub /mnt/my\\040dir\\011tab\\012nl\\134back rw - nfs4 [fd00::5]:/a\\040b rw\n"
    "38 22 0:54 / /misc rw,relatime propagate_from:1 unbindable - autofs /etc/auto.misc"
    " rw,fd=7,pgrp=1,timeout=10\n"
)


def test_mountinfo_fields_are_read_with_escapes_and_optional_fields(tmp_path: Path) -> None:
    found = read_mounts(write_mountinfo(tmp_path, MOUNTINFO))

    assert [m.mount_id for m in found] == [22, 36, 37, 38]
    crr = found[1]
    assert crr == MountInfo(
        mount_id=36,
        parent_id=22,
        major=0,
        minor=52,
        root="/",
        mount_point="/misc/crr",
        options=("rw", "nosuid", "relatime"),
        optional_fields=("shared:7", "master:1"),
        fstype="nfs",
        source="10.1.13.5:/crr-site1",
        super_options=("rw", "vers=3", "hard", "proto=tcp", "addr=10.1.13.5"),
    )
    escaped = found[2]
    assert escaped.mount_point == "/mnt/my dir\ttab\nnl\\back"
    assert escaped.root == "/sub"
    assert escaped.source == "[fd00::5]:/a b"
    assert escaped.optional_fields == ()
    assert found[3].optional_fields == ("propagate_from:1", "unbindable")


def test_only_nfs_and_nfs4_mounts_count_as_nfs(tmp_path: Path) -> None:
    found = read_mounts(write_mountinfo(tmp_path, MOUNTINFO))

    assert [(m.mount_id, m.fstype) for m in nfs_mounts(found)] == [(36, "nfs"), (37, "nfs4")]
    assert [m.is_nfs for m in found] == [False, True, True, False]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("36 22 0:52 / /misc/crr rw shared:7 nfs 10.1.13.5:/x rw", 'no "-" separator'),
        ("36 22 0:52 / /misc/crr - nfs 10.1.13.5:/x rw", 'no "-" separator'),
        ("36 22 0:52 / /misc/crr rw - nfs 10.1.13.5:/x", "expected 3 fields after the separator"),
        ("36 22 0:52 / /misc/crr rw - nfs a b c d", "expected 3 fields after the separator"),
        ("x 22 0:52 / /misc/crr rw - nfs 10.1.13.5:/x rw", "is not a number"),
        ("36 22 052 / /misc/crr rw - nfs 10.1.13.5:/x rw", "is not a number"),
        ("36 22 0:52 / misc/crr rw - nfs 10.1.13.5:/x rw", "not an absolute path"),
        ("36 22 0:52 / /" + "a" * 70_000 + " rw - nfs h:/x rw", "longer than 65536 bytes"),
    ],
)
def test_a_malformed_line_is_skipped_with_its_reason(line: str, reason: str) -> None:
    table = parse_mountinfo(f"{line}\n{nfs_line(40, '/misc/crr', 'h:/x')}\n".encode())

    assert [m.mount_id for m in table.mounts] == [40]
    assert len(table.skipped) == 1
    assert table.skipped[0].number == 1
    assert reason in table.skipped[0].reason


def test_skipped_lines_are_logged_and_the_rest_is_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = "garbage\n" + MOUNTINFO + "\n\n1 2 3\n"
    with caplog.at_level(logging.WARNING):
        found = read_mounts(write_mountinfo(tmp_path, text))

    assert len(found) == 4
    assert "line 1 skipped" in caplog.text
    assert "line 8 skipped" in caplog.text


def test_an_unreadable_mountinfo_raises_a_steering_error(tmp_path: Path) -> None:
    with pytest.raises(SteeringError, match=r"cannot read .*missing"):
        read_mounts(tmp_path / "missing")


def test_this_process_mountinfo_has_a_root_mount() -> None:
    assert any(m.mount_point == "/" for m in read_mounts())


@given(st.binary(max_size=3000))
def test_any_bytes_are_parsed_without_crashing(data: bytes) -> None:
    table = parse_mountinfo(data)

    assert all(m.mount_point.startswith("/") for m in table.mounts)


def _kernel_escape(text: str) -> str:
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in text)


@given(st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40))
def test_an_escaped_mount_point_reads_back_as_the_kernel_had_it(name: str) -> None:
    point = "/mnt/" + name
    line = f"36 22 0:52 / {_kernel_escape(point)} rw - nfs h:/x rw"

    (mount,) = parse_mountinfo(line.encode()).mounts

    assert mount.mount_point == point
