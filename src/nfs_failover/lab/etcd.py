"""The lab's etcd: Debian's ``etcd`` server, one to five members, each in a network
namespace of its own on a bridge of the lab's, so that the host's controllers and the
client hosts' agents reach it, and a member can be cut off with nftables as a zone is.

The members live at 198.18.{4 * slot}.11 and up, a subnet the zones and the client
network leave free; the host holds .1 on the bridge. A cut-off drops everything on the
member's link (clients and peers alike), as a lost availability zone would.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nfs_failover.errors import LabError
from nfs_failover.lab import netns, system
from nfs_failover.pacing import Deadline

CLIENT_PORT = 2379
PEER_PORT = 2380
MAX_MEMBERS = 5
CUT_TABLE = "nfo_cut"
READY_TIMEOUT = 30.0  # seconds for a new cluster to elect a leader and answer
HEALTH_TIMEOUT = 1.0  # seconds for one /health request

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Member:
    name: str  # etcd1, etcd2, ...
    namespace: str
    host_veth: str
    address: str
    folder: Path  # its data folder and log

    @property
    def client_url(self) -> str:
        return f"http://{self.address}:{CLIENT_PORT}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.address}:{PEER_PORT}"

    @property
    def log(self) -> Path:
        return self.folder / "etcd.log"


@dataclass(frozen=True)
class MemberStatus:
    name: str
    namespace: str
    address: str
    state: str  # "up", "cut-off", "stopped" or "absent"
    pid: int | None


def members(tag: str, slot: int, state_dir: Path, count: int = MAX_MEMBERS) -> list[Member]:
    net = f"198.18.{slot * 4}"
    return [
        Member(
            name=f"etcd{i}",
            namespace=f"nfo{tag}-e{i}",
            host_veth=f"nfo{tag}-e{i}",
            address=f"{net}.{10 + i}",
            folder=state_dir / "etcd" / f"etcd{i}",
        )
        for i in range(1, count + 1)
    ]


def gateway(slot: int) -> str:
    return f"198.18.{slot * 4}.1"


def endpoints(wanted: list[Member]) -> str:
    """The store URL naming every member: ``etcd://A:2379,B:2379``."""
    return "etcd://" + ",".join(f"{m.address}:{CLIENT_PORT}" for m in wanted)


def ensure(wanted: list[Member], bridge: str, slot: int, routes: list[str], say: Progress) -> None:
    """Make the members that are missing and start the ones that are not running: a new
    cluster of all of ``wanted``, or the one whose data is there."""
    if not netns.link_exists(bridge):
        say(f"etcd network on bridge {bridge}")
        system.run(["ip", "link", "add", bridge, "type", "bridge"])
    system.run(["ip", "addr", "replace", f"{gateway(slot)}/24", "dev", bridge])
    system.run(["ip", "link", "set", bridge, "up"])
    cluster = ",".join(f"{m.name}={m.peer_url}" for m in wanted)
    started = []
    for member in wanted:
        _ensure_network(member, bridge, slot, routes, say)
        if _pid(member) is None:
            say(f"{member.name}: starting etcd on {member.address}")
            _start(member, cluster, token=bridge)
            started.append(member)
    if started:
        wait_ready(wanted, READY_TIMEOUT)


def _ensure_network(
    member: Member, bridge: str, slot: int, routes: list[str], say: Progress
) -> None:
    if not netns.exists(member.namespace):
        say(f"{member.name}: creating network namespace {member.namespace}")
        system.run(["ip", "netns", "add", member.namespace])
    if not netns.link_exists(member.host_veth):
        veth = ["ip", "link", "add", member.host_veth, "type", "veth", "peer", "name", "eth0"]
        system.run([*veth, "netns", member.namespace])
    system.run(["ip", "link", "set", member.host_veth, "master", bridge])
    system.run(["ip", "link", "set", member.host_veth, "up"])
    inside = ["ip", "netns", "exec", member.namespace]
    system.run([*inside, "ip", "addr", "replace", f"{member.address}/24", "dev", "eth0"])
    system.run([*inside, "ip", "link", "set", "eth0", "up"])
    system.run([*inside, "ip", "link", "set", "lo", "up"])
    for route in routes:  # the lab's other subnets, through the host
        system.run([*inside, "ip", "route", "replace", route, "via", gateway(slot)])


def _start(member: Member, cluster: str, *, token: str) -> None:
    member.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    exe = system.which("etcd")
    if exe is None:
        raise LabError("etcd is not installed (package etcd-server); run scripts/setup")
    argv = [
        "ip", "netns", "exec", member.namespace, exe,
        "--name", member.name,
        "--data-dir", str(member.folder / "data"),
        "--listen-client-urls", member.client_url,
        "--advertise-client-urls", member.client_url,
        "--listen-peer-urls", member.peer_url,
        "--initial-advertise-peer-urls", member.peer_url,
        "--initial-cluster", cluster,
        "--initial-cluster-state", "new",  # ignored once its data folder holds a cluster
        "--initial-cluster-token", token,
    ]  # fmt: skip
    with open(member.log, "ab") as log:
        subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )


def wait_ready(wanted: list[Member], timeout: float) -> None:
    """Until every member that is not cut off says it is healthy, or LabError."""
    deadline = Deadline(timeout)
    pending = [m for m in wanted if not cut_off(m)]
    while pending:
        pending = [m for m in pending if not healthy(m)]
        if not pending:
            return
        if deadline.passed():
            names = ", ".join(f"{m.name} (log: {m.log})" for m in pending)
            raise LabError(f"etcd did not answer healthy within {timeout:g}s: {names}")
        time.sleep(0.2)


def healthy(member: Member) -> bool:
    """Whether the member answers /health with a leader elected."""
    try:
        with urllib.request.urlopen(  # noqa: S310 - a lab address, http
            member.client_url + "/health", timeout=HEALTH_TIMEOUT
        ) as reply:
            return bool(json.loads(reply.read()).get("health") == "true")
    except (OSError, ValueError):
        return False


def cut(member: Member) -> bool:
    """Drop everything on the member's link. False if it was already cut off."""
    if not netns.exists(member.namespace):
        raise LabError(f"{member.name}: not part of the lab (run `nfs-failover lab up --etcd`)")
    if cut_off(member):
        return False
    ruleset = (
        f"table inet {CUT_TABLE} {{\n"
        "  chain input { type filter hook input priority 0; policy accept; "
        'iifname "eth0" drop; }\n'
        "  chain output { type filter hook output priority 0; policy accept; "
        'oifname "eth0" drop; }\n'
        "}\n"
    )
    rules = member.folder / "cut.nft"
    rules.write_text(ruleset)
    system.run(["ip", "netns", "exec", member.namespace, "nft", "-f", str(rules)])
    return True


def restore(member: Member) -> bool:
    if not netns.exists(member.namespace) or not cut_off(member):
        return False
    system.run(
        ["ip", "netns", "exec", member.namespace, "nft", "delete", "table", "inet", CUT_TABLE]
    )
    return True


def cut_off(member: Member) -> bool:
    if not netns.exists(member.namespace):
        return False
    out = system.run(
        ["ip", "netns", "exec", member.namespace, "nft", "list", "tables"], check=False
    )
    return f"inet {CUT_TABLE}" in out


def status(member: Member) -> MemberStatus:
    pid = _pid(member)
    if not netns.exists(member.namespace):
        state = "absent"
    elif pid is None:
        state = "stopped"
    else:
        state = "cut-off" if cut_off(member) else "up"
    return MemberStatus(member.name, member.namespace, member.address, state, pid)


def remove(member: Member, say: Progress) -> None:
    if netns.exists(member.namespace):
        say(f"{member.name}: stopping etcd and removing {member.namespace}")
        netns.stop_pids(netns.pids(member.namespace))
        system.run(["ip", "netns", "del", member.namespace])
    netns.remove_link(member.host_veth)


def _pid(member: Member) -> int | None:
    if not netns.exists(member.namespace):
        return None
    for pid in sorted(netns.pids(member.namespace)):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/comm").read_text().strip() == "etcd":
                return pid
    return None
