"""Mounts: mountinfo parsing, mapping to volumes, checks against real hung FUSE mounts,
verdicts, and healing real bind mounts.

Tests that mount something skip without root or /dev/fuse, except when
NFS_FAILOVER_REQUIRE_LAB=1: there they fail. Every mount and process they start is
cleaned up in ``finally`` blocks; a FUSE daemon is ended with SIGKILL, which is what
releases a child stuck in its filesystem, and its folder is then lazily unmounted.
"""

from __future__ import annotations

import ctypes.util
import errno
import importlib.util
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nfs_failover.config import Config, parse_config
from nfs_failover.desired import VolumeDesired, failed_over, normal
from nfs_failover.errors import SteeringError
from nfs_failover.steering import mount_check_child, mounts
from nfs_failover.steering.mounts import (
    HEALED,
    CheckResult,
    CheckStatus,
    HealOutcome,
    HealPolicy,
    Holder,
    ManagedMount,
    MountInfo,
    MountState,
    Verdict,
    abandoned_count,
    check_mount,
    classify,
    find_holders,
    heal,
    managed_mounts,
    nfs_mounts,
    parse_mountinfo,
    read_mounts,
    reap_abandoned,
    survey,
)

HUNG_FUSE = Path(__file__).with_name("hung_fuse.py")

CONFIG = """\
volumes:
  - name: crr
    mode: read-write
    replicas:
      - {name: site1, export: "10.1.13.5:/crr-site1"}
      - {name: dest1, export: "10.2.13.5:/crr-dest1"}
    replication: {provider: local, source_path: /srv/az1/crr, destination_path: /srv/az2/crr}
  - name: lab
    mode: read-only
    mount: {map_key: data}
    replicas:
      - {name: az1, export: "nfs1.example.com:/srv/az1/vol"}
      - {name: az2, export: "[fd00::5]:/srv/az2/vol"}
    replication: {provider: local, source_path: /srv/az1/vol, destination_path: /srv/az2/vol}
autofs: {mount_root: /misc}
"""


@pytest.fixture
def config() -> Config:
    return parse_config(CONFIG, "test.yaml")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mountinfo"
    path.write_bytes(text.encode())
    return path


def nfs_line(mount_id: int, point: str, source: str, fstype: str = "nfs") -> str:
    return (
        f"{mount_id} 25 0:{mount_id} / {point} rw,relatime shared:9 - {fstype} {source} rw,vers=3"
    )


# -- mountinfo -----------------------------------------------------------------------------

MOUNTINFO = (
    "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
    "36 22 0:52 / /misc/crr rw,nosuid,relatime shared:7 master:1 - nfs 10.1.13.5:/crr-site1"
    " rw,vers=3,hard,proto=tcp,addr=10.1.13.5\n"
    "37 22 0:53 /sub /mnt/my\\040dir\\011tab\\012nl\\134back rw - nfs4 [fd00::5]:/a\\040b rw\n"
    "38 22 0:54 / /misc rw,relatime propagate_from:1 unbindable - autofs /etc/auto.misc"
    " rw,fd=7,pgrp=1,timeout=10\n"
)


def test_mountinfo_fields_are_read_with_escapes_and_optional_fields(tmp_path: Path) -> None:
    found = read_mounts(write(tmp_path, MOUNTINFO))

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
    found = read_mounts(write(tmp_path, MOUNTINFO))

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
        found = read_mounts(write(tmp_path, text))

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


# -- our volumes' mounts ---------------------------------------------------------------------


def test_mounts_at_keys_map_to_their_volume_and_replica(config: Config, tmp_path: Path) -> None:
    text = "\n".join(
        [
            "38 22 0:54 / /misc rw - autofs /etc/auto.nfs-failover rw",
            nfs_line(40, "/misc/crr", "10.1.13.5:/crr-site1/"),  # a trailing "/"
            nfs_line(41, "/misc/data", "[fd00:0::5]:/srv/az2//vol", "nfs4"),
            nfs_line(42, "/misc/data", "NFS1.example.com:/srv/az1/vol"),
            nfs_line(43, "/misc/crr/sub", "10.1.13.5:/crr-site1/sub"),  # a submount
            nfs_line(44, "/misc/other", "10.1.13.5:/crr-site1"),  # not a key of ours
            nfs_line(45, "/elsewhere/crr", "10.1.13.5:/crr-site1"),  # not under the root
            "46 22 0:56 / /misc/crr rw - tmpfs tmpfs rw",  # not NFS
        ]
    )

    found = managed_mounts(config, read_mounts(write(tmp_path, text)))

    assert [(m.mount.mount_id if m.mount else None, m.volume.name, m.key) for m in found] == [
        (40, "crr", "crr"),
        (41, "lab", "data"),
        (42, "lab", "data"),
    ]
    assert [m.replica.name if m.replica else None for m in found] == ["site1", "az2", "az1"]


def test_a_mount_from_no_replica_of_its_volume_has_an_unknown_server(
    config: Config, tmp_path: Path
) -> None:
    text = "\n".join(
        [
            nfs_line(40, "/misc/crr", "10.9.9.9:/crr-site1"),
            nfs_line(41, "/misc/data", "[fd00::5]:/srv/az1/vol"),  # the other replica's path
            nfs_line(42, "/misc/crr", "10.2.13.5:/crr-dest1/more"),
            nfs_line(43, "/misc/crr", "no-colon-here"),
        ]
    )

    found = managed_mounts(config, read_mounts(write(tmp_path, text)))

    assert [(m.key, m.replica) for m in found] == [
        ("crr", None),
        ("data", None),
        ("crr", None),
        ("crr", None),
    ]


# -- the check child -------------------------------------------------------------------------


def test_the_child_reports_estale_by_number_and_name() -> None:
    def stale(path: str) -> object:
        raise OSError(errno.ESTALE, "Stale file handle", path)

    assert mount_check_child.check("/misc/crr", statvfs=stale) == "error 116 ESTALE"


def test_the_child_reports_a_successful_statvfs_with_its_latency() -> None:
    assert re.fullmatch(r"ok \d+\.\d{6}", mount_check_child.check("/", statvfs=lambda p: None))


def test_the_child_runs_isolated_from_its_file_alone(tmp_path: Path) -> None:
    argv = [sys.executable, "-I", "-S", str(mounts.CHILD), str(tmp_path / "missing")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)

    assert (done.returncode, done.stdout) == (0, "error 2 ENOENT\n")


def test_a_path_that_is_not_a_mount_point_is_not_checked(tmp_path: Path) -> None:
    result = check_mount(tmp_path, timeout=1.0)

    assert result.status is CheckStatus.NOT_MOUNTED
    assert result.pid is None
    assert "not checked" in result.detail


# -- real FUSE mounts ------------------------------------------------------------------------


def _unavailable(needs_fuse: bool) -> str | None:
    what = "hung-mount tests" if needs_fuse else "bind-mount tests"
    if os.geteuid() != 0:
        return f"{what} need root (to mount)"
    if shutil.which("umount") is None or shutil.which("mount") is None:
        return f"{what} need mount and umount (util-linux)"
    if not needs_fuse:
        return None
    if not Path("/dev/fuse").exists():
        return "hung-mount tests need /dev/fuse"
    if importlib.util.find_spec("mfusepy") is None or ctypes.util.find_library("fuse3") is None:
        return "hung-mount tests need mfusepy and libfuse3 (Debian fuse3, libfuse3-3)"
    return None


def _require(needs_fuse: bool) -> None:
    reason = _unavailable(needs_fuse)
    if reason is None:
        return
    if os.environ.get("NFS_FAILOVER_REQUIRE_LAB") == "1":
        pytest.fail(f"NFS_FAILOVER_REQUIRE_LAB=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def require_fuse() -> None:
    _require(needs_fuse=True)


def require_root() -> None:
    _require(needs_fuse=False)


def _mounted(point: Path) -> MountInfo | None:
    return next((m for m in read_mounts() if m.mount_point == str(point)), None)


def _wait_until(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.02)
    return False


def _lazy_unmount(point: Path) -> None:
    if _mounted(point) is not None:
        subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=10, check=False)


def _reap_all(timeout: float = 5.0) -> int:
    """Reap abandoned checks until none is left or ``timeout`` passes; how many are left."""
    deadline = time.monotonic() + timeout
    while True:
        reap_abandoned()
        if abandoned_count() == 0 or time.monotonic() > deadline:
            return abandoned_count()
        time.sleep(0.05)


@contextmanager
def fuse_mount(tmp_path: Path, mode: str) -> Iterator[Path]:
    """A FUSE filesystem (see hung_fuse.py) mounted in a folder of ``tmp_path``."""
    require_fuse()
    point = tmp_path / f"fuse-{mode}"
    point.mkdir()
    log = tmp_path / f"fuse-{mode}.log"
    with log.open("wb") as output:
        daemon = subprocess.Popen(
            [sys.executable, str(HUNG_FUSE), str(point), mode],
            stdin=subprocess.DEVNULL, stdout=output, stderr=output,
        )  # fmt: skip
    try:
        if not _wait_until(lambda: _mounted(point) or daemon.poll() is not None, 10.0):
            pytest.fail(f"FUSE was not mounted within 10 s: {log.read_text()}")
        if _mounted(point) is None:
            pytest.fail(f"the FUSE daemon exited: {log.read_text()}")
        yield point
    finally:
        # SIGKILL aborts the FUSE connection, which releases every process stuck in it.
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=10)
        _lazy_unmount(point)


def _children_running(script: Path) -> list[int]:
    """Pids of this process's children that run ``script``."""
    found = []
    for name in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        if ppid == os.getpid() and str(script).encode() in cmdline:
            found.append(int(name))
    return found


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return "gone"


def test_a_hung_mount_is_hung_by_its_deadline_and_its_check_is_abandoned(tmp_path: Path) -> None:
    try:
        assert _reap_all() == 0
        with fuse_mount(tmp_path, "hung") as point:
            started = time.monotonic()
            first = check_mount(point, timeout=1.0)
            took = time.monotonic() - started

            assert first.status is CheckStatus.HUNG
            assert first.detail == "statvfs did not return within 1s"
            assert 1.0 <= took < 1.5
            assert abandoned_count() == 1
            # SIGKILL does not end it: the FUSE request is already with the daemon.
            assert _wait_until(lambda: _state(first.pid or 0) == "D", 2.0)

            started = time.monotonic()
            second = check_mount(point, timeout=1.0)

            assert time.monotonic() - started < 0.2
            assert second.status is CheckStatus.HUNG
            assert second.pid == first.pid
            assert "has been stuck for" in second.detail
            assert _children_running(mounts.CHILD) == [first.pid]
            assert abandoned_count() == 1
            assert reap_abandoned() == []
    finally:
        left = _reap_all()
    assert left == 0


def test_a_healthy_mount_is_ok_with_its_latency(tmp_path: Path) -> None:
    with fuse_mount(tmp_path, "healthy") as point:
        result = check_mount(point, timeout=5.0)

    assert result.status is CheckStatus.OK
    assert result.latency is not None and 0 <= result.latency < 5.0
    assert result.detail.startswith("statvfs answered in ")
    assert abandoned_count() == 0


def test_a_stale_mount_is_stale_and_heal_unmounts_it(config: Config, tmp_path: Path) -> None:
    with fuse_mount(tmp_path, "stale") as point:
        check = check_mount(point, timeout=5.0)
        mount = _mounted(point)
        assert mount is not None
        crr = config.volumes[0]
        state = classify(ManagedMount(crr, mount, crr.source), check, normal(crr, False))
        action = heal(state, policy=HealPolicy())

        assert _mounted(point) is None
    assert check.status is CheckStatus.STALE
    assert check.errno_name == "ESTALE"
    assert state.verdict is Verdict.STALE
    assert state.reason == (
        "mounted from site1; statvfs failed with ESTALE (Stale file handle):"
        " the server no longer knows the mount's file handle"
    )
    assert action.outcome is HealOutcome.UNMOUNTED


def test_heal_unmounts_a_hung_mount_at_once_and_a_new_check_finds_nothing_there(
    config: Config, tmp_path: Path
) -> None:
    try:
        with fuse_mount(tmp_path, "hung") as point:
            check = check_mount(point, timeout=0.5)
            mount = _mounted(point)
            assert mount is not None
            crr = config.volumes[0]
            # Mounted from zone 2, the second choice of a read-only fallback: a new mount
            # goes to zone 1 first.
            state = classify(ManagedMount(crr, mount, crr.replicas[1]), check, normal(crr, True))
            started = time.monotonic()
            action = heal(state, policy=HealPolicy(umount_timeout=5.0))

            assert time.monotonic() - started < 2.0
            assert action.outcome is HealOutcome.UNMOUNTED, action.reason
            assert _mounted(point) is None
            # The stuck child still runs; the folder under it is no mount to check now.
            assert check_mount(point, timeout=0.5).status is CheckStatus.NOT_MOUNTED
            assert abandoned_count() == 1
        assert state.reason == (
            "mounted from dest1; statvfs did not return within 500ms: the mount is hung"
        )
    finally:
        left = _reap_all()
    assert left == 0


# -- verdicts --------------------------------------------------------------------------------


def _mount(point: str = "/misc/crr", source: str = "10.1.13.5:/crr-site1") -> MountInfo:
    return MountInfo(40, 22, 0, 52, "/", point, ("rw",), (), "nfs", source, ("rw",))


def _check(status: CheckStatus, detail: str) -> CheckResult:
    return CheckResult("/misc/crr", status, detail)


OK_CHECK = _check(CheckStatus.OK, "statvfs answered in 3ms")


@pytest.mark.parametrize(
    ("replica", "check", "desired", "verdict", "reason"),
    [
        pytest.param(
            "site1", None, "failed_over", Verdict.WRONG_REPLICA,
            "mounted from site1, which is fenced; clients must use dest1", id="fenced",
        ),
        pytest.param(
            "dest1", None, "normal", Verdict.WRONG_REPLICA,
            "mounted from dest1, which is not offered; clients must use site1", id="not-offered",
        ),
        pytest.param(
            "dest1", None, "nothing", Verdict.WRONG_REPLICA,
            "mounted from dest1, which is not offered; no replica is offered now",
            id="nothing-offered",
        ),
        pytest.param(
            "site1", OK_CHECK, "fallback", Verdict.OK,
            "mounted from site1; statvfs answered in 3ms", id="ok",
        ),
        pytest.param(
            "dest1", OK_CHECK, "fallback", Verdict.OK,
            "mounted from dest1; statvfs answered in 3ms", id="ok-second-choice",
        ),
        pytest.param(
            "site1", _check(CheckStatus.HUNG, "statvfs did not return within 2s"), "normal",
            Verdict.HUNG, "mounted from site1; statvfs did not return within 2s: the mount is hung",
            id="hung",
        ),
        pytest.param(
            "site1", _check(CheckStatus.ERROR, "statvfs failed with EIO (Input/output error)"),
            "normal", Verdict.ERROR,
            "mounted from site1; statvfs failed with EIO (Input/output error)", id="error",
        ),
        pytest.param(
            "site1", _check(CheckStatus.NOT_MOUNTED, "nothing is mounted there"), "normal",
            Verdict.NOT_MOUNTED, "crr was unmounted before its check", id="gone-before-check",
        ),
    ],
)  # fmt: skip
def test_a_mounted_key_gets_a_verdict_and_a_reason(
    config: Config,
    replica: str,
    check: CheckResult | None,
    desired: str,
    verdict: Verdict,
    reason: str,
) -> None:
    crr = config.volumes[0]
    wanted = {
        "normal": normal(crr, read_only_fallback=False),
        "fallback": normal(crr, read_only_fallback=True),
        "failed_over": failed_over(crr, generation=1),
        "nothing": VolumeDesired("crr", offered=(), active="", fenced=("site1",)),
    }[desired]
    chosen = next(r for r in crr.replicas if r.name == replica)

    state = classify(ManagedMount(crr, _mount(), chosen), check, wanted)

    assert (state.verdict, state.reason) == (verdict, reason)
    assert (state.volume, state.key, state.replica) == ("crr", "crr", replica)
    assert (state.mount_point, state.mount_id) == ("/misc/crr", 40)


def test_a_sound_mount_of_the_second_choice_is_a_fallback_once_the_first_answers(
    config: Config,
) -> None:
    """A read-only volume after its failback: the clients on zone 2 go back to zone 1, but
    only once this client saw zone 1 up (never a churn while it is down)."""
    crr = config.volumes[0]
    both = normal(crr, read_only_fallback=True)
    dest1 = crr.replicas[1]
    mount = ManagedMount(crr, _mount(source="10.2.13.5:/crr-dest1"), dest1)

    back = classify(mount, OK_CHECK, both, frozenset({"site1", "dest1"}))
    still = classify(mount, OK_CHECK, both, frozenset({"dest1"}))
    hung = classify(mount, _check(CheckStatus.HUNG, "statvfs did not return within 2s"), both,
                    frozenset({"site1"}))  # fmt: skip

    assert (back.verdict, back.reason) == (
        Verdict.FALLBACK,
        "mounted from dest1, a fallback, while the preferred site1 answers again",
    )
    assert still.verdict is Verdict.OK and hung.verdict is Verdict.HUNG
    assert Verdict.FALLBACK in HEALED


def test_a_key_without_a_mount_is_not_mounted_and_needs_nothing(config: Config) -> None:
    lab = config.volumes[1]

    state = classify(ManagedMount(lab, None, None), None, normal(lab, False))

    assert (state.verdict, state.reason) == (
        Verdict.NOT_MOUNTED,
        "data is not mounted: nothing to do",
    )
    assert state.mount_point is None


def test_a_mount_from_an_unknown_server_is_named_with_its_source(config: Config) -> None:
    crr = config.volumes[0]

    state = classify(
        ManagedMount(crr, _mount(source="10.9.9.9:/x"), None), None, normal(crr, False)
    )

    assert state.verdict is Verdict.UNKNOWN_SERVER
    assert state.reason == "mounted from 10.9.9.9:/x, which is no replica of volume crr"


def test_an_offered_mount_without_a_check_is_a_bug(config: Config) -> None:
    crr = config.volumes[0]

    with pytest.raises(ValueError, match="check it"):
        classify(ManagedMount(crr, _mount(), crr.source), None, normal(crr, False))


def test_survey_checks_only_mounts_of_offered_replicas(
    config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "\n".join(
        [
            nfs_line(40, "/misc/crr", "10.1.13.5:/crr-site1"),
            nfs_line(41, "/misc/crr", "10.9.9.9:/x"),
        ]
    )
    checked: list[str] = []

    def fake_check(path: str, *, timeout: float, machine: mounts.Machine) -> CheckResult:
        checked.append(path)
        return CheckResult(path, CheckStatus.OK, "statvfs answered in 1ms", latency=0.001)

    monkeypatch.setattr(mounts, "check_mount", fake_check)
    crr, lab = config.volumes
    desired = {"crr": failed_over(crr, 1), "lab": normal(lab, False)}

    states = survey(config, desired, timeout=1.0, mountinfo=write(tmp_path, text))

    assert [(s.key, s.verdict) for s in states] == [
        ("crr", Verdict.WRONG_REPLICA),
        ("crr", Verdict.UNKNOWN_SERVER),
        ("data", Verdict.NOT_MOUNTED),
    ]
    assert checked == []
    states = survey(
        config, {"crr": normal(crr, False)}, timeout=1.0, mountinfo=write(tmp_path, text)
    )
    assert [(s.key, s.verdict) for s in states] == [
        ("crr", Verdict.OK),
        ("crr", Verdict.UNKNOWN_SERVER),
    ]
    assert checked == ["/misc/crr"]


# -- healing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fallback", [False, True], ids=["only-offered", "first-of-two"])
def test_a_hung_mount_of_the_maps_first_choice_is_left_to_wait(
    config: Config, tmp_path: Path, fallback: bool
) -> None:
    """A new mount would try the same dead server first (the only one offered, or the one
    the weights prefer), and automount would answer no lookup of the key meanwhile: the
    failover's remount would wait behind it."""
    try:
        with fuse_mount(tmp_path, "hung") as point:
            check = check_mount(point, timeout=0.5)
            mount = _mounted(point)
            assert mount is not None
            crr = config.volumes[0]
            state = classify(ManagedMount(crr, mount, crr.source), check, normal(crr, fallback))

            action = heal(state, policy=HealPolicy())

            still = _mounted(point)
            assert still is not None and still.mount_id == mount.mount_id
        assert state.verdict is Verdict.HUNG
        assert action.outcome is HealOutcome.NOTHING
        assert action.reason.endswith(
            "the mount is hung; site1 is the map's first choice, so a new mount would wait on"
            " it too: the mount waits for it, or for the controller to steer elsewhere"
        )
    finally:
        _reap_all()


@pytest.mark.parametrize(
    ("verdict", "reason"),
    [
        (Verdict.OK, "no action: mounted from site1; statvfs answered in 3ms"),
        (Verdict.NOT_MOUNTED, "no action: mounted from site1; statvfs answered in 3ms"),
        (
            Verdict.UNKNOWN_SERVER,
            "no action (a mount from an unknown server is only reported): mounted from"
            " site1; statvfs answered in 3ms",
        ),
        (
            Verdict.ERROR,
            "no action (a failed check is no proof that the mount is stuck): mounted from"
            " site1; statvfs answered in 3ms",
        ),
    ],
)
def test_heal_leaves_other_verdicts_alone_without_looking(verdict: Verdict, reason: str) -> None:
    state = MountState("crr", "crr", verdict, "mounted from site1; statvfs answered in 3ms",
                       mount_point="/misc/crr", mount_id=40)  # fmt: skip

    action = heal(state, policy=HealPolicy(), mountinfo=Path("/nonexistent/mountinfo"))

    assert (action.outcome, action.reason) == (HealOutcome.NOTHING, reason)


def test_heal_does_nothing_once_the_mount_is_gone(tmp_path: Path) -> None:
    state = MountState("crr", "crr", Verdict.HUNG, "mounted from site1; hung",
                       mount_point="/misc/crr", mount_id=40)  # fmt: skip
    replaced = write(tmp_path, nfs_line(41, "/misc/crr", "10.2.13.5:/crr-dest1"))

    action = heal(state, policy=HealPolicy(), mountinfo=replaced)

    assert action.outcome is HealOutcome.ALREADY_GONE
    assert action.reason == "no action: /misc/crr is no longer mounted"


def test_holders_are_found_by_cwd_root_fd_and_maps_links_alone(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    for pid, command in ((100, "bash"), (200, "python3"), (300, "other")):
        (proc / str(pid) / "fd").mkdir(parents=True)
        (proc / str(pid) / "comm").write_text(f"{command}\n")
    (proc / "100" / "cwd").symlink_to("/misc/crr/work")
    (proc / "100" / "root").symlink_to("/")
    (proc / "200" / "cwd").symlink_to("/home")
    (proc / "200" / "fd" / "0").symlink_to("/dev/null")
    (proc / "200" / "fd" / "7").symlink_to("/misc/crr/data.db (deleted)")
    (proc / "200" / "maps").write_text(
        "7f00-7f01 r-xp 00000000 00:34 12  /misc/crr/lib/libx.so\n7f02-7f03 rw-p 00000000 00:00 0\n"
    )
    (proc / "300" / "cwd").symlink_to("/misc/crrx")  # a sibling whose name starts the same
    (proc / "self").symlink_to("100")

    holders = find_holders("/misc/crr", proc=proc)

    assert holders == (
        Holder(100, "bash", ("cwd",)),
        Holder(200, "python3", ("fd 7", "maps")),
    )


def test_a_holder_scan_that_overruns_its_deadline_is_abandoned_and_reported() -> None:
    try:
        with pytest.raises(SteeringError, match="did not finish within 0s"):
            find_holders("/misc/crr", timeout=0.0)
    finally:
        left = _reap_all()
    assert left == 0


def test_a_child_with_much_to_say_is_read_while_it_runs() -> None:
    argv = [sys.executable, "-c", "import sys; sys.stdout.write('x' * 1_000_000)"]

    ran = mounts._run_bounded(argv, 30.0, None)

    assert (ran.returncode, len(ran.stdout)) == (0, 1_000_000)


@contextmanager
def bind_mount(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """A folder bind-mounted on ``tmp_path/crr``, and a ``sleep`` whose cwd is inside it."""
    require_root()
    source, point = tmp_path / "source", tmp_path / "crr"
    (source / "work").mkdir(parents=True)
    point.mkdir()
    holder = None
    try:
        subprocess.run(["mount", "--bind", str(source), str(point)], check=True, timeout=10)
        holder = subprocess.Popen(["sleep", "60"], cwd=point / "work")
        yield point, holder
    finally:
        if holder is not None:
            holder.kill()
            holder.wait(timeout=10)
        _lazy_unmount(point)


def _fenced_state(config: Config, point: Path) -> MountState:
    mount = _mounted(point)
    assert mount is not None
    crr = config.volumes[0]
    return classify(ManagedMount(crr, mount, crr.source), None, failed_over(crr, 1))


def test_heal_lazily_unmounts_a_fenced_mount_and_names_who_holds_it(
    config: Config, tmp_path: Path
) -> None:
    with bind_mount(tmp_path) as (point, holder):
        state = _fenced_state(config, point)

        action = heal(state, policy=HealPolicy())

        assert _mounted(point) is None
    assert action.outcome is HealOutcome.UNMOUNTED
    assert action.holders == (Holder(holder.pid, "sleep", ("cwd",)),)
    assert action.reason == (
        f"unmounted (forced, lazily) {point}: mounted from site1, which is fenced; clients"
        " must use dest1; autofs mounts an offered replica on the next access; 1 process"
        f" keeps using the old mount: {holder.pid} (sleep)"
    )
    assert (action.volume, action.key, action.verdict) == ("crr", "crr", Verdict.WRONG_REPLICA)


def test_a_report_only_policy_changes_nothing(config: Config, tmp_path: Path) -> None:
    with bind_mount(tmp_path) as (point, holder):
        state = _fenced_state(config, point)

        action = heal(state, policy=HealPolicy(report_only=True))

        still = _mounted(point)
        assert still is not None and still.mount_id == state.mount_id
    assert action.outcome is HealOutcome.WOULD_UNMOUNT
    assert action.reason == (
        f"report only: would lazily unmount {point}: mounted from site1, which is fenced;"
        f" clients must use dest1; 1 process is using it: {holder.pid} (sleep)"
    )
    assert action.holders == (Holder(holder.pid, "sleep", ("cwd",)),)


def test_heal_unmounts_even_when_the_holder_scan_overruns(config: Config, tmp_path: Path) -> None:
    try:
        with bind_mount(tmp_path) as (point, _):
            state = _fenced_state(config, point)

            action = heal(state, policy=HealPolicy(scan_timeout=0.0))

            assert _mounted(point) is None
        assert action.outcome is HealOutcome.UNMOUNTED
        assert action.holders == ()
        assert action.reason.endswith(
            "; the processes using it are unknown (the scan of /proc did not finish within 0s)"
        )
    finally:
        left = _reap_all()
    assert left == 0
