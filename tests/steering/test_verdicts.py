"""Our volumes' mounts: each NFS mount under the mount root mapped to its volume and
replica, and the verdict on it with the sentence that explains it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nfs_failover.config import Config
from nfs_failover.desired import VolumeDesired, failed_over, normal
from nfs_failover.steering.checks import CheckResult, CheckStatus
from nfs_failover.steering.healing import HEALED
from nfs_failover.steering.machine import Ran
from nfs_failover.steering.mountinfo import MountInfo, read_mounts
from nfs_failover.steering.verdicts import (
    ManagedMount,
    Verdict,
    classify,
    managed_mounts,
    survey,
)
from tests.steering.mount_helpers import nfs_line, write_mountinfo


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

    found = managed_mounts(config, read_mounts(write_mountinfo(tmp_path, text)))

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

    found = managed_mounts(config, read_mounts(write_mountinfo(tmp_path, text)))

    assert [(m.key, m.replica) for m in found] == [
        ("crr", None),
        ("data", None),
        ("crr", None),
        ("crr", None),
    ]


# -- verdicts -----------------------------------------------------------------------------


def _mount(point: str = "/misc/crr", source: str = "10.1.13.5:/crr-site1") -> MountInfo:
    return MountInfo(40, 22, 0, 52, "/", point, ("rw",), (), "nfs", source, ("rw",))


def _check(status: CheckStatus, detail: str) -> CheckResult:
    return CheckResult("/misc/crr", status, detail)


OK_CHECK = _check(CheckStatus.OK, "statvfs answered in 3ms")


@pytest.mark.parametrize(
    ("replica", "check", "desired", "verdict", "reason"),
    [
        pytest.param(
            "site1",
            None,
            "failed_over",
            Verdict.WRONG_REPLICA,
            "mounted from site1, which is fenced; clients must use dest1",
            id="fenced",
        ),
        pytest.param(
            "dest1",
            None,
            "normal",
            Verdict.WRONG_REPLICA,
            "mounted from dest1, which is not offered; clients must use site1",
            id="not-offered",
        ),
        pytest.param(
            "dest1",
            None,
            "nothing",
            Verdict.WRONG_REPLICA,
            "mounted from dest1, which is not offered; no replica is offered now",
            id="nothing-offered",
        ),
        pytest.param(
            "site1",
            OK_CHECK,
            "fallback",
            Verdict.OK,
            "mounted from site1; statvfs answered in 3ms",
            id="ok",
        ),
        pytest.param(
            "dest1",
            OK_CHECK,
            "fallback",
            Verdict.OK,
            "mounted from dest1; statvfs answered in 3ms",
            id="ok-second-choice",
        ),
        pytest.param(
            "site1",
            _check(CheckStatus.HUNG, "statvfs did not return within 2s"),
            "normal",
            Verdict.HUNG,
            "mounted from site1; statvfs did not return within 2s: the mount is hung",
            id="hung",
        ),
        pytest.param(
            "site1",
            _check(CheckStatus.ERROR, "statvfs failed with EIO (Input/output error)"),
            "normal",
            Verdict.ERROR,
            "mounted from site1; statvfs failed with EIO (Input/output error)",
            id="error",
        ),
        pytest.param(
            "site1",
            _check(CheckStatus.NOT_MOUNTED, "nothing is mounted there"),
            "normal",
            Verdict.NOT_MOUNTED,
            "crr was unmounted before its check",
            id="gone-before-check",
        ),
    ],
)
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
    hung_check = _check(CheckStatus.HUNG, "statvfs did not return within 2s")
    hung = classify(mount, hung_check, both, frozenset({"site1"}))

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


@dataclass
class ScriptedClient:
    """A client whose mount table is ``mountinfo`` and whose every check answers at once;
    it records the paths checked."""

    mountinfo: str
    name: str = "scripted client"
    checked: list[str] = field(default_factory=list)

    def files_path(self, path: Path) -> Path:
        return path

    def reload_automount(self, pidfile: Path, *, systemd: bool) -> str:
        raise AssertionError("a survey reloads nothing")

    def read_mountinfo(self) -> bytes:
        return self.mountinfo.encode()

    def check(self, path: str, timeout: float, mount: tuple[str, int]) -> Ran:
        self.checked.append(path)
        return Ran(0, "ok 0.001000\n", "", pid=0)

    def run_bounded(self, argv: Sequence[str], timeout: float) -> Ran:
        raise AssertionError("a survey runs nothing but checks")


def test_survey_checks_only_mounts_of_offered_replicas(config: Config) -> None:
    text = "\n".join(
        [
            nfs_line(40, "/misc/crr", "10.1.13.5:/crr-site1"),
            nfs_line(41, "/misc/crr", "10.9.9.9:/x"),
        ]
    )
    client = ScriptedClient(text)
    crr, lab = config.volumes
    desired = {"crr": failed_over(crr, 1), "lab": normal(lab, False)}

    states = survey(config, desired, timeout=1.0, machine=client)

    assert [(s.key, s.verdict) for s in states] == [
        ("crr", Verdict.WRONG_REPLICA),
        ("crr", Verdict.UNKNOWN_SERVER),
        ("data", Verdict.NOT_MOUNTED),
    ]
    assert client.checked == []
    states = survey(config, {"crr": normal(crr, False)}, timeout=1.0, machine=client)
    assert [(s.key, s.verdict) for s in states] == [
        ("crr", Verdict.OK),
        ("crr", Verdict.UNKNOWN_SERVER),
    ]
    assert client.checked == ["/misc/crr"]
