"""Healing: the lazy unmount of hung, stale and wrongly mounted keys (real FUSE and bind
mounts), the verdicts left alone and why, and the scan for the processes that still use
the old mount. See mount_helpers for what these tests need and clean up."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from nfs_failover.config import Config
from nfs_failover.desired import failed_over, normal
from nfs_failover.errors import SteeringError
from nfs_failover.steering.checks import CheckStatus, check_mount
from nfs_failover.steering.children import RUNNER
from nfs_failover.steering.healing import HealOutcome, HealPolicy, Holder, find_holders, heal
from nfs_failover.steering.verdicts import ManagedMount, MountState, Verdict, classify
from tests.steering.mount_helpers import (
    bind_mount,
    fuse_mount,
    mounted,
    nfs_line,
    reap_all,
    write_mountinfo,
)


def test_a_stale_mount_is_stale_and_heal_unmounts_it(config: Config, tmp_path: Path) -> None:
    with fuse_mount(tmp_path, "stale") as point:
        check = check_mount(point, timeout=5.0)
        mount = mounted(point)
        assert mount is not None
        crr = config.volumes[0]
        state = classify(ManagedMount(crr, mount, crr.source), check, normal(crr, False))
        action = heal(state, policy=HealPolicy())

        assert mounted(point) is None
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
            mount = mounted(point)
            assert mount is not None
            crr = config.volumes[0]
            # Mounted from zone 2, the second choice of a read-only fallback: a new mount
            # goes to zone 1 first.
            state = classify(ManagedMount(crr, mount, crr.replicas[1]), check, normal(crr, True))
            started = time.monotonic()
            action = heal(state, policy=HealPolicy(umount_timeout=5.0))

            assert time.monotonic() - started < 2.0
            assert action.outcome is HealOutcome.UNMOUNTED, action.reason
            assert mounted(point) is None
            # The stuck child still runs; the folder under it is no mount to check now.
            assert check_mount(point, timeout=0.5).status is CheckStatus.NOT_MOUNTED
            assert RUNNER.abandoned_count() == 1
        assert state.reason == (
            "mounted from dest1; statvfs did not return within 500ms: the mount is hung"
        )
    finally:
        left = reap_all()
    assert left == 0


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
            mount = mounted(point)
            assert mount is not None
            crr = config.volumes[0]
            state = classify(ManagedMount(crr, mount, crr.source), check, normal(crr, fallback))

            action = heal(state, policy=HealPolicy())

            still = mounted(point)
            assert still is not None and still.mount_id == mount.mount_id
        assert state.verdict is Verdict.HUNG
        assert action.outcome is HealOutcome.NOTHING
        assert action.reason.endswith(
            "the mount is hung; site1 is the map's first choice, so a new mount would wait on"
            " it too: the mount waits for it, or for the controller to steer elsewhere"
        )
    finally:
        reap_all()


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
    found = "mounted from site1; statvfs answered in 3ms"
    state = MountState("crr", "crr", verdict, found, mount_point="/misc/crr", mount_id=40)

    action = heal(state, policy=HealPolicy(), mountinfo=Path("/nonexistent/mountinfo"))

    assert (action.outcome, action.reason) == (HealOutcome.NOTHING, reason)


def test_heal_does_nothing_once_the_mount_is_gone(tmp_path: Path) -> None:
    found = "mounted from site1; hung"
    state = MountState("crr", "crr", Verdict.HUNG, found, mount_point="/misc/crr", mount_id=40)
    replaced = write_mountinfo(tmp_path, nfs_line(41, "/misc/crr", "10.2.13.5:/crr-dest1"))

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
        left = reap_all()
    assert left == 0


def _fenced_state(config: Config, point: Path) -> MountState:
    mount = mounted(point)
    assert mount is not None
    crr = config.volumes[0]
    return classify(ManagedMount(crr, mount, crr.source), None, failed_over(crr, 1))


def test_heal_lazily_unmounts_a_fenced_mount_and_names_who_holds_it(
    config: Config, tmp_path: Path
) -> None:
    with bind_mount(tmp_path) as (point, holder):
        state = _fenced_state(config, point)

        action = heal(state, policy=HealPolicy())

        assert mounted(point) is None
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

        still = mounted(point)
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

            assert mounted(point) is None
        assert action.outcome is HealOutcome.UNMOUNTED
        assert action.holders == ()
        assert action.reason.endswith(
            "; the processes using it are unknown (the scan of /proc did not finish within 0s)"
        )
    finally:
        left = reap_all()
    assert left == 0
