"""The real lab: Ganesha zones in network namespaces, probed and cut off for real."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from nfs_failover.errors import LabError, ProtocolStatusError
from nfs_failover.lab import Lab, clients
from nfs_failover.lab.clients import qemu_pids
from nfs_failover.probe import Reason, Stage, probe_export
from nfs_failover.rpc.mount import MountClient
from nfs_failover.rpc.nfs3 import Nfs3Client, StableHow
from nfs_failover.rpc.portmap import PortmapClient
from tests.helpers import CLI, fresh_lab, require_lab

pytestmark = pytest.mark.lab


async def _root_handle(host: str, path: str) -> bytes:
    async with await PortmapClient.connect(host, timeout=2) as pmap:
        port = await pmap.getport(100005, 3)
    async with await MountClient.connect(host, port, timeout=2) as mountd:
        return (await mountd.mnt(path)).fhandle


async def _write_file(export: str, name: str, data: bytes) -> bytes:
    host, path = export.split(":", 1)
    root = await _root_handle(host, path)
    async with await Nfs3Client.connect(host, timeout=2) as nfs:
        fh = await nfs.create(root, name)
        written = await nfs.write(fh, 0, data, StableHow.FILE_SYNC)
        assert written.count == len(data)
        back = await nfs.read(fh, 0, len(data) + 10)
        names = {e.name for e in await nfs.listdir(root)}
        assert name in names
        return back.data


def test_both_zones_probe_up_with_every_stage_answering(lab: Lab) -> None:
    for zone in lab.zones:
        result = asyncio.run(probe_export(zone.export, timeout=2.0))
        assert result.up, result.summary()
        assert [s.stage for s in result.stages] == [
            Stage.PORTMAP,
            Stage.GETPORT,
            Stage.MOUNTD,
            Stage.MNT,
            Stage.NFS,
            Stage.GETATTR,
        ]


def test_write_check_tells_the_writable_source_from_the_read_only_destination(lab: Lab) -> None:
    source, destination = (asyncio.run(probe_export(z.export, check_write=True)) for z in lab.zones)
    assert (source.up, source.writable) == (True, True)
    assert (destination.up, destination.writable) == (True, False)


def test_own_nfs3_client_writes_on_zone_1_and_the_file_is_on_disk(lab: Lab) -> None:
    source = lab.zone("az1")
    data = os.urandom(100_000)
    assert asyncio.run(_write_file(source.export, "written-by-test", data)) == data
    assert (source.folder / "written-by-test").read_bytes() == data


def test_zone_2_refuses_writes_with_nfs3err_rofs(lab: Lab) -> None:
    with pytest.raises(ProtocolStatusError) as refused:
        asyncio.run(_write_file(lab.zone("az2").export, "must-not-exist", b"x"))
    assert refused.value.name == "NFS3ERR_ROFS"
    assert not (lab.zone("az2").folder / "must-not-exist").exists()


def test_outage_makes_the_probe_report_down_within_its_deadline_and_restore_brings_it_back(
    lab: Lab,
) -> None:
    zone = lab.zone("az1")
    assert lab.outage("az1") is True
    try:
        assert lab.outage("az1") is False  # already cut off: nothing changes
        assert lab.status().zones[0].state == "cut-off"
        started = time.monotonic()
        result = asyncio.run(probe_export(zone.export, timeout=1.0))
        elapsed = time.monotonic() - started
        assert not result.up
        assert result.failed is not None
        assert (result.failed.stage, result.failed.reason) == (Stage.PORTMAP, Reason.TIMEOUT)
        assert elapsed < 1.0 + 0.5
        # The other zone is unaffected.
        assert asyncio.run(probe_export(lab.zone("az2").export, timeout=1.0)).up
    finally:
        assert lab.restore("az1") is True
    assert lab.restore("az1") is False
    assert asyncio.run(probe_export(zone.export, timeout=2.0)).up
    assert lab.status().zones[0].state == "up"


def test_up_twice_keeps_the_running_servers(lab: Lab) -> None:
    before = [z.pid for z in lab.status().zones]
    lab.up()
    assert [z.pid for z in lab.status().zones] == before


def test_lab_status_json_names_each_zone_and_the_config(lab: Lab) -> None:
    env = {**os.environ, "NFS_FAILOVER_LAB_DIR": str(lab.state_dir)}
    out = subprocess.run(
        [*CLI, "lab", "status", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    status = json.loads(out)
    assert status["config"] == str(lab.config_path)
    assert [(z["name"], z["address"], z["export"], z["state"]) for z in status["zones"]] == [
        (z.name, z.address, z.export, "up") for z in lab.zones
    ]
    assert [(c["name"], c["address"], c["state"]) for c in status["clients"]] == [
        (name, lab.client(name).address, "up") for name in ("client1", "client2")
    ]
    assert [(m["name"], m["address"], m["state"]) for m in status["etcd"]] == [
        (m.name, m.address, "up") for m in lab.etcd_members[:3]
    ]


def test_lab_config_is_valid_and_names_both_replicas(lab: Lab) -> None:
    out = subprocess.run(
        [*CLI, "check-config", str(lab.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "1 volume (1 read-write), 2 replicas" in out.stdout


def test_probe_command_exits_1_when_a_zone_is_cut_off(lab: Lab) -> None:
    exports = [z.export for z in lab.zones]
    ok = subprocess.run(
        [*CLI, "probe", "--json", *exports], capture_output=True, text=True, timeout=30, check=False
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lab.outage("az2")
    try:
        down = subprocess.run(
            [*CLI, "probe", "--json", "--timeout", "500ms", *exports],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        lab.restore("az2")
    assert down.returncode == 1
    results = json.loads(down.stdout)
    assert [(r["up"], r["failed_stage"], r["reason"]) for r in results] == [
        (True, None, None),
        (False, "portmap", "timeout"),
    ]


def _leftovers(lab: Lab) -> list[str]:
    found = []
    netns = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True
    ).stdout
    for zone in lab.zones:
        if zone.namespace in netns.split():
            found.append(f"namespace {zone.namespace}")
        if Path("/sys/class/net", zone.host_veth).exists():
            found.append(f"link {zone.host_veth}")
    for member in lab.etcd_members:
        if member.namespace in netns.split():
            found.append(f"namespace {member.namespace}")
    links = (lab.bridge, lab.etcd_bridge, *(m.host_veth for m in lab.etcd_members))
    for link in (*links, *(c.tap for c in lab.clients)):
        if Path("/sys/class/net", link).exists():
            found.append(f"link {link}")
    found += [f"VM {pid}" for c in lab.clients for pid in qemu_pids(c.tap)]
    for pid in Path("/proc").iterdir():
        if pid.name.isdigit():
            try:
                cmdline = (pid / "cmdline").read_bytes()
            except OSError:
                continue
            if str(lab.state_dir).encode() in cmdline:
                found.append(f"process {pid.name}")
    if lab.state_dir.exists():
        found.append(f"folder {lab.state_dir}")
    return found


def test_down_leaves_nothing_behind_even_after_the_state_folder_is_lost(
    tmp_path: Path,
) -> None:
    require_lab()
    lab = fresh_lab(tmp_path / "state", tag="d", slot=41)
    forward = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    try:
        lab.up()
        assert lab.status().up
        lab.down()
        assert _leftovers(lab) == []
        # A crash that lost the state folder: namespaces, servers, etcd, the client host's
        # VM and its links are still found by name, and the forwarding sysctl is put back.
        lab.up(clients=1, etcd_members=1)
        assert [c.state for c in lab.status().clients] == ["up"]
        assert [m.state for m in lab.status().etcd] == ["up"]
        subprocess.run(["rm", "-rf", str(lab.state_dir)], check=True)
        Lab(lab.state_dir, tag="d", slot=41).down()
        assert _leftovers(lab) == []
        assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == forward
    finally:
        lab.down()


def test_an_export_the_server_does_not_have_fails_at_mnt_with_its_status(lab: Lab) -> None:
    result = asyncio.run(probe_export(f"{lab.zone('az1').address}:/no-such-export"))
    assert not result.up
    assert result.failed is not None
    assert (result.failed.stage, result.failed.reason) == (Stage.MNT, Reason.STATUS)
    assert result.failed.detail.startswith("MNT3ERR_")


def test_lab_up_without_the_client_kernel_says_how_to_get_it_and_builds_nothing(
    tmp_path: Path,
) -> None:
    require_lab()
    state = tmp_path / "state"
    done = subprocess.run(
        [*CLI, "lab", "up", "--clients", "1", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "NFS_FAILOVER_KERNEL_DIR": str(tmp_path / "none")},
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"nfs-failover: no client-host kernel in {tmp_path / 'none'}: run scripts/setup (it "
        "fetches Debian's linux-image-amd64 with apt-get download and unpacks it there)"
    ]
    assert not state.exists()


def test_a_missing_virtme_ng_is_named_with_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:

    monkeypatch.setattr(clients.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LabError, match=r"virtme-ng \(vng\): pip install 'nfs-failover\[lab\]'"):
        clients.vng_path()
