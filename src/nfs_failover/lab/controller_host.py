"""A second host for a controller in the lab: a network namespace on the client network.

A controller needs no NFS client in its kernel (it probes with its own RPC client), so
its host need not be a VM: a network namespace with an address of its own on the client
bridge, routed to the zones and the etcd members through the host as the client hosts
are, is another machine as far as the network is concerned. Cutting the host's own
traffic off (or killing its controller) leaves this one running, and the other way
round. It shares the host's files: the local engine's relationship state and the
Ganesha exports stand for the storage's API, which every controller of a real
deployment reaches too; the store it shares is the lab's etcd, over the network.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from nfs_failover.lab import netns, system

MAX_HOSTS = 2
FIRST_ADDRESS = 200  # .201, .202 on the client network; the client hosts use .11 and up


@dataclass(frozen=True)
class ControllerHost:
    name: str  # ctl1, ctl2
    namespace: str
    host_veth: str
    address: str
    gateway: str


def hosts(tag: str, client_gateway: str) -> tuple[ControllerHost, ...]:
    net = client_gateway.rsplit(".", 1)[0]
    return tuple(
        ControllerHost(
            name=f"ctl{index}",
            namespace=f"nfo{tag}-ctl{index}",
            host_veth=f"nfo{tag}-ctl{index}",
            address=f"{net}.{FIRST_ADDRESS + index}",
            gateway=client_gateway,
        )
        for index in range(1, MAX_HOSTS + 1)
    )


def ensure(host: ControllerHost, bridge: str) -> None:
    """Create the namespace, its link on ``bridge`` and its routes; what exists is kept.
    Only the lab's own range is routed (through the host, whose forwarding rules for the
    client bridge let the zones and the etcd members through and drop the rest)."""
    if not netns.exists(host.namespace):
        system.run(["ip", "netns", "add", host.namespace])
    if not netns.link_exists(host.host_veth):
        veth = ["ip", "link", "add", host.host_veth, "type", "veth", "peer", "name", "eth0"]
        system.run([*veth, "netns", host.namespace])
    system.run(["ip", "link", "set", host.host_veth, "master", bridge])
    system.run(["ip", "link", "set", host.host_veth, "up"])
    inside = ["ip", "netns", "exec", host.namespace]
    system.run([*inside, "ip", "addr", "replace", f"{host.address}/24", "dev", "eth0"])
    system.run([*inside, "ip", "link", "set", "eth0", "up"])
    system.run([*inside, "ip", "link", "set", "lo", "up"])
    system.run([*inside, "ip", "route", "replace", "198.18.0.0/15", "via", host.gateway])


def spawn(
    host: ControllerHost,
    argv: Sequence[str],
    *,
    log: Path,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in the host's namespace, its output appended to ``log``. ``ip netns
    exec`` execs the program itself, so the process returned is the program's own (a
    signal sent to it reaches the program)."""
    with open(log, "ab") as out:
        os.chmod(log, 0o600)
        return subprocess.Popen(
            ["ip", "netns", "exec", host.namespace, *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )


def remove(host: ControllerHost) -> None:
    """Stop whatever runs in the namespace and remove it and its link."""
    if netns.exists(host.namespace):
        netns.stop_pids(netns.pids(host.namespace))
        system.run(["ip", "netns", "del", host.namespace])
    netns.remove_link(host.host_veth)
