"""The lab itself: two zones, each a network namespace serving one export.

Zone ``az1`` holds the source (read-write), zone ``az2`` the destination (read-only), as
in the seed. A lab has a ``tag`` and a ``slot`` so that a test lab never collides with a
lab left running: the tag goes into namespace and interface names, the slot picks the
subnets inside 198.18.0.0/15.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from nfs_failover import aio, files
from nfs_failover.errors import LabError
from nfs_failover.ganesha import export_access
from nfs_failover.lab import clients as hosts
from nfs_failover.lab import controller_host, etcd, ganesha, netns, system
from nfs_failover.lab.clients import ClientHost, ClientStatus
from nfs_failover.pacing import Deadline
from nfs_failover.probe import probe_many

DEFAULT_STATE_DIR = Path("/var/lib/nfs-failover/lab")
STATE_DIR_ENV = "NFS_FAILOVER_LAB_DIR"
MARKER = "lab.json"
CONFIG_NAME = "lab.yaml"
OUTAGE_TABLE = "nfo_outage"
OUTAGE_PORTS = (ganesha.PORTMAP_PORT, ganesha.MOUNT_PORT, ganesha.NFS_PORT)
VOLUME = "crr"
API_PORT = 8741
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
RUN_DIR = Path("/run/nfs-failover-lab")
READY_TIMEOUT = 20.0

Progress = Callable[[str], None]


def default_state_dir() -> Path:
    return Path(os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR)


@dataclass(frozen=True)
class Zone:
    """One zone of the lab and the replica it serves."""

    name: str
    role: str  # "source" or "destination"
    replica: str
    namespace: str
    host_veth: str
    address: str
    gateway: str
    pseudo: str
    folder: Path
    zone_dir: Path

    @property
    def export(self) -> str:
        return f"{self.address}:{self.pseudo}"

    @property
    def conf(self) -> Path:
        return self.zone_dir / "ganesha.conf"

    @property
    def pidfile(self) -> Path:
        return self.zone_dir / "ganesha.pid"

    @property
    def log(self) -> Path:
        return self.zone_dir / "ganesha.log"


@dataclass(frozen=True)
class ZoneStatus:
    name: str
    role: str
    namespace: str
    address: str
    export: str
    state: str  # "up", "cut-off", "stopped" or "absent"
    access: str  # "rw", "ro" or "unknown"
    pid: int | None


@dataclass(frozen=True)
class LabStatus:
    state_dir: str
    config: str | None
    zones: list[ZoneStatus]
    clients: list[ClientStatus]
    etcd: list[etcd.MemberStatus]

    @property
    def up(self) -> bool:
        return all(z.state == "up" for z in self.zones)

    def to_json(self) -> dict[str, object]:
        return asdict(self)


class Lab:
    """Build, inspect, cut off, restore and tear down the two-zone lab."""

    def __init__(self, state_dir: Path | None = None, *, tag: str = "", slot: int = 0) -> None:
        if not re.fullmatch(r"[a-z0-9]{0,4}", tag):
            raise LabError(f"lab tag {tag!r}: expected up to 4 lowercase letters or digits")
        if not 0 <= slot <= 62:
            raise LabError(f"lab slot {slot}: expected 0 to 62")
        self.state_dir = (state_dir or default_state_dir()).resolve()
        self.tag = tag
        self.slot = slot
        self.config_path = self.state_dir / CONFIG_NAME
        self.zones = (self._zone(1, "source", "site1"), self._zone(2, "destination", "dest1"))
        net = f"198.18.{self.slot * 4 + 3}"
        self.client_network = f"{net}.0/24"
        self.client_gateway = f"{net}.1"
        self.bridge = f"nfo{self.tag}-cbr"
        self.forward_table = f"nfo{self.tag}_clients"
        self.clients = tuple(self._client(i) for i in range(1, hosts.MAX_CLIENTS + 1))
        self.controller_hosts = controller_host.hosts(self.tag, self.client_gateway)
        self.etcd_bridge = f"nfo{self.tag}-ebr"
        self.etcd_members = etcd.members(self.tag, self.slot, self.state_dir)

    @classmethod
    def from_state_dir(cls, state_dir: Path | None = None) -> Lab:
        """The lab recorded in a state folder (its tag and slot), or the default one."""
        state_dir = (state_dir or default_state_dir()).resolve()
        try:
            saved = json.loads((state_dir / MARKER).read_text())
            return cls(state_dir, tag=str(saved["tag"]), slot=int(saved["slot"]))
        except FileNotFoundError:
            return cls(state_dir)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LabError(f"{state_dir / MARKER}: unreadable lab record ({exc})") from exc

    def _zone(self, index: int, role: str, replica: str) -> Zone:
        net = f"198.18.{self.slot * 4 + index}"
        name = f"az{index}"
        return Zone(
            name=name,
            role=role,
            replica=replica,
            namespace=f"nfo{self.tag}-{name}",
            host_veth=f"nfo{self.tag}-{name}",
            address=f"{net}.5",
            gateway=f"{net}.1",
            pseudo=f"/{VOLUME}-{replica}",
            folder=self.state_dir / name / f"{VOLUME}-{replica}",
            zone_dir=self.state_dir / name,
        )

    def _client(self, index: int) -> ClientHost:
        net = self.client_gateway.rsplit(".", 1)[0]
        return ClientHost(
            name=f"client{index}",
            index=index,
            address=f"{net}.{10 + index}",
            gateway=self.client_gateway,
            tap=f"nfo{self.tag}-c{index}",
            folder=self.state_dir / "clients" / f"client{index}",
        )

    def client(self, name: str) -> ClientHost:
        for client in self.clients:
            if client.name == name:
                return client
        raise LabError(
            f"unknown client host {name!r}: expected client1 to client{hosts.MAX_CLIENTS}"
        )

    def controller_host(self, name: str) -> controller_host.ControllerHost:
        """The controller host ``name`` (ctl1, ctl2) on the client network, created if it
        is missing; the client network must be up (``up`` with client hosts)."""
        host = next((h for h in self.controller_hosts if h.name == name), None)
        if host is None:
            names = ", ".join(h.name for h in self.controller_hosts)
            raise LabError(f"unknown controller host {name!r}: expected one of {names}")
        if not netns.link_exists(self.bridge):
            raise LabError("the client network is down: `lab up --clients N` builds it")
        with self._locked():
            controller_host.ensure(host, self.bridge)
        return host

    def running_clients(self) -> list[ClientHost]:
        return [c for c in self.clients if hosts.qemu_pids(c.tap)]

    def _etcd_member(self, name: str) -> etcd.Member | None:
        return next((m for m in self.etcd_members if m.name == name), None)

    def running_etcd(self) -> list[etcd.Member]:
        """The lab's etcd members that exist (up or cut off)."""
        return [m for m in self.etcd_members if netns.exists(m.namespace)]

    def zone(self, name: str) -> Zone:
        for zone in self.zones:
            if name in (zone.name, zone.replica):
                return zone
        names = ", ".join(z.name for z in self.zones)
        raise LabError(f"unknown zone {name!r}: expected one of {names} (or an etcd member)")

    # -- up --------------------------------------------------------------------------

    def up(
        self, progress: Progress | None = None, *, clients: int = 0, etcd_members: int = 0
    ) -> LabStatus:
        """Build whatever is missing, with client hosts client1..``clients`` and an etcd
        cluster of ``etcd_members``; a lab that is already up is left as it is (client
        hosts and members beyond those asked for too)."""
        say = progress or (lambda _msg: None)
        system.require_root()
        system.require_tools()
        if not 0 <= clients <= hosts.MAX_CLIENTS:
            raise LabError(f"--clients {clients}: expected 0 to {hosts.MAX_CLIENTS}")
        if not 0 <= etcd_members <= etcd.MAX_MEMBERS:
            raise LabError(f"--etcd {etcd_members}: expected 0 to {etcd.MAX_MEMBERS} members")
        if etcd_members and system.which("etcd") is None:
            raise LabError("etcd is not installed (package etcd-server); run scripts/setup")
        kernel = None
        if clients:
            hosts.require_client_tools()
            kernel = hosts.find_kernel()
            hosts.vng_path()
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.state_dir, 0o700)
        with self._locked():
            _write_if_changed(
                self.state_dir / MARKER,
                json.dumps({"tag": self.tag, "slot": self.slot}, indent=2) + "\n",
            )
            for zone in self.zones:
                self._ensure_network(zone, say)
                self._ensure_server(zone, say)
            if etcd_members:
                routes = [self.client_network]
                etcd.ensure(
                    self.etcd_members[:etcd_members], self.etcd_bridge, self.slot, routes, say
                )
            self._write_config(say)
        self.wait_ready(READY_TIMEOUT, say)
        if kernel is not None:
            with self._locked():
                self._ensure_clients(self.clients[:clients], kernel, say)
        return self.status()

    # -- client hosts ------------------------------------------------------------------

    def _ensure_clients(
        self, wanted: Sequence[ClientHost], kernel: hosts.Kernel, say: Progress
    ) -> None:
        self._ensure_client_network(say)
        booting = [c for c in wanted if not hosts.qemu_pids(c.tap)]
        if not booting:
            return
        kvm = hosts.kvm_works(kernel, RUN_DIR)
        booted = []
        for client in booting:
            if not netns.link_exists(client.tap):
                system.run(["ip", "tuntap", "add", "dev", client.tap, "mode", "tap"])
            system.run(["ip", "link", "set", client.tap, "master", self.bridge])
            system.run(["ip", "link", "set", client.tap, "up"])
            hosts.write_guest_files(client, routes=["198.18.0.0/15"])
            say(
                f"{client.name}: booting kernel {kernel.release} "
                f"({'KVM' if kvm else 'software emulation'}) on {client.address}"
            )
            booted.append((client, hosts.boot(client, kernel, kvm=kvm)))
        try:
            hosts.wait_ready(booted, hosts.BOOT_TIMEOUT, say)
        except LabError:
            for client in booting:
                hosts.stop(client.tap)  # never leave a half-booted guest behind
            raise
        for client in booting:
            hosts.start_automount(client)

    def _ensure_client_network(self, say: Progress) -> None:
        if not netns.link_exists(self.bridge):
            say(f"client network {self.client_network} on bridge {self.bridge}")
            system.run(["ip", "link", "add", self.bridge, "type", "bridge"])
        system.run(["ip", "addr", "replace", f"{self.client_gateway}/24", "dev", self.bridge])
        system.run(["ip", "link", "set", self.bridge, "up"])
        for zone in self.zones:
            system.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    zone.namespace,
                    "ip",
                    "route",
                    "replace",
                    self.client_network,
                    "via",
                    zone.gateway,
                ]
            )
        # The host forwards between the client network and the zones (and the lab's etcd),
        # and nothing else: a guest's packet to any other address (in 198.18.0.0/15 or
        # not) is dropped here instead of leaving by the host's default route.
        peers = [*(z.host_veth for z in self.zones), self.etcd_bridge]
        veths = ", ".join(f'"{name}"' for name in peers)
        rules = self.state_dir / "clients.nft"
        rules.write_text(
            f"table inet {self.forward_table} {{\n"
            "  chain forward {\n"
            "    type filter hook forward priority 0; policy accept;\n"
            f'    iifname "{self.bridge}" oifname {{ {veths} }} accept\n'
            f'    oifname "{self.bridge}" iifname {{ {veths} }} accept\n'
            f'    iifname "{self.bridge}" counter drop\n'
            f'    oifname "{self.bridge}" counter drop\n'
            "  }\n"
            "}\n"
        )
        system.run(["nft", "delete", "table", "inet", self.forward_table], check=False)
        system.run(["nft", "-f", str(rules)])
        # Routing between the client network and the zones; put back by the last `down`.
        claim_ip_forward(self._run_marker("ip_forward"))
        claim_mount_root(self._run_marker("mount_root"))

    def _run_marker(self, what: str) -> Path:
        return RUN_DIR / f"lab-{self.tag or 'default'}-{self.slot}.{what}"

    def _ensure_network(self, zone: Zone, say: Progress) -> None:
        if not netns.exists(zone.namespace):
            say(f"{zone.name}: creating network namespace {zone.namespace}")
            system.run(["ip", "netns", "add", zone.namespace])
        if not netns.link_exists(zone.host_veth):
            say(f"{zone.name}: linking {zone.host_veth} <-> {zone.namespace}/eth0")
            system.run(
                [
                    "ip",
                    "link",
                    "add",
                    zone.host_veth,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    zone.namespace,
                ]
            )
        in_zone = ["ip", "netns", "exec", zone.namespace]
        system.run(["ip", "addr", "replace", f"{zone.gateway}/24", "dev", zone.host_veth])
        system.run(["ip", "link", "set", zone.host_veth, "up"])
        system.run([*in_zone, "ip", "addr", "replace", f"{zone.address}/24", "dev", "eth0"])
        system.run([*in_zone, "ip", "link", "set", "eth0", "up"])
        system.run([*in_zone, "ip", "link", "set", "lo", "up"])

    def _ensure_server(self, zone: Zone, say: Progress) -> None:
        zone.folder.mkdir(parents=True, exist_ok=True)
        (zone.zone_dir / "recovery").mkdir(exist_ok=True)
        if not zone.conf.exists():
            # Written once: later the replication engine flips Access_Type on break/resync.
            spec = ganesha.ExportSpec(1, zone.folder, zone.pseudo, zone.role == "destination")
            zone.conf.write_text(
                ganesha.render_config(zone.address, [spec], zone.zone_dir / "recovery")
            )
        pids = netns.pids(zone.namespace)
        if ganesha.running_pid(zone.pidfile, pids) is not None:
            return
        # A half-started zone (rpcbind without Ganesha) must go: a fresh Ganesha beside
        # an old rpcbind registers with the wrong one (docs/lab.md).
        netns.stop_pids(pids)
        say(f"{zone.name}: starting rpcbind and NFS-Ganesha on {zone.address}")
        ganesha.start(zone.namespace, zone.conf, zone.log, zone.pidfile)

    def _write_config(self, say: Progress) -> None:
        source, destination = self.zones
        token = self.state_dir / "api-token"
        if not token.exists():
            _write_if_changed(token, secrets.token_hex(32) + "\n")  # 0600, like every file here
        config = {
            "volumes": [
                {
                    "name": VOLUME,
                    "mode": "read-write",
                    "mount": {"map_key": VOLUME, "options": "rw,hard,tcp,vers=3,timeo=50,nolock"},
                    "replicas": [
                        {"name": z.replica, "export": z.export, "zone": z.name} for z in self.zones
                    ],
                    "replication": {
                        "provider": "local",
                        "source_path": str(source.folder),
                        "destination_path": str(destination.folder),
                        "schedule": "10s",
                        "state_dir": str(self.state_dir / "replication" / VOLUME),
                        "source_export": {
                            "config": str(source.conf),
                            "pidfile": str(source.pidfile),
                        },
                        "destination_export": {
                            "config": str(destination.conf),
                            "pidfile": str(destination.pidfile),
                        },
                    },
                }
            ],
            "policy": {
                "probe_interval": "1s",
                "probe_timeout": "2s",
                "failover_after": "5s",
                "recover_after": "5s",
                "max_lag": "1m",
                "failback": "manual",
            },
            "autofs": {
                "mount_root": "/misc",
                "root": str(self.state_dir / "client"),
                "timeout": "10s",
                "negative_timeout": "1s",
                # The lab's own automount, never the host's.
                "pidfile": str(self.state_dir / "client" / "automount.pid"),
            },
            "store": f"sqlite://{self.state_dir / 'state.db'}",
            "api": {
                "listen": f"127.0.0.1:{API_PORT + self.slot}",
                "token_file": str(token),
                "socket": str(self.state_dir / "api.sock"),
            },
        }
        text = "# Written by `nfs-failover lab up` for the lab's volume pair.\n" + yaml.safe_dump(
            config, sort_keys=False
        )
        if _write_if_changed(self.config_path, text):
            say(f"wrote {self.config_path}")

    def wait_ready(self, timeout: float, say: Progress | None = None) -> None:
        """Wait until every zone's export answers a full probe, or raise LabError."""
        deadline = Deadline(timeout)
        pending = list(self.zones)
        while pending:
            results = aio.run(probe_many([z.export for z in pending], timeout=2.0))
            pending = [z for z, r in zip(pending, results, strict=True) if not r.up]
            if not pending:
                break
            if deadline.passed():
                reasons = "; ".join(
                    f"{z.name}: {r.summary()}" for z, r in zip(pending, results, strict=False)
                )
                raise LabError(
                    f"the lab did not come up within {timeout:g}s: {reasons} "
                    f"(logs: {', '.join(str(z.log) for z in pending)})"
                )
            time.sleep(0.2)
        if say:
            say("both zones answer NFS")

    # -- outage and restore -------------------------------------------------------------

    def outage(self, name: str) -> bool:
        """Drop the NFS ports in a zone, like the seed's NSG rule; or cut an etcd member
        off (everything on its link). False if already cut."""
        system.require_root()
        member = self._etcd_member(name)
        if member is not None:
            return etcd.cut(member)
        zone = self.zone(name)
        if not netns.exists(zone.namespace):
            raise LabError(f"{zone.name}: the lab is not up (run `nfs-failover lab up`)")
        if _outage_active(zone.namespace):
            return False
        ports = "{ " + ", ".join(str(p) for p in OUTAGE_PORTS) + " }"
        ruleset = (
            f"table inet {OUTAGE_TABLE} {{\n"
            "  chain input {\n"
            "    type filter hook input priority 0; policy accept;\n"
            f"    tcp dport {ports} drop\n"
            f"    udp dport {ports} drop\n"
            "  }\n"
            "}\n"
        )
        rules = zone.zone_dir / "outage.nft"
        rules.write_text(ruleset)
        system.run(["ip", "netns", "exec", zone.namespace, "nft", "-f", str(rules)])
        return True

    def restore(self, name: str) -> bool:
        """Lift a zone's outage or an etcd member's cut-off. False if it was not cut off."""
        system.require_root()
        member = self._etcd_member(name)
        if member is not None:
            return etcd.restore(member)
        zone = self.zone(name)
        if not netns.exists(zone.namespace) or not _outage_active(zone.namespace):
            return False
        system.run(
            ["ip", "netns", "exec", zone.namespace, "nft", "delete", "table", "inet", OUTAGE_TABLE]
        )
        return True

    # -- status ------------------------------------------------------------------------

    def status(self) -> LabStatus:
        zones = [self._zone_status(z) for z in self.zones]
        config = str(self.config_path) if self.config_path.exists() else None
        clients = [
            hosts.status(c) for c in self.clients if c.folder.exists() or netns.link_exists(c.tap)
        ]
        members = [etcd.status(m) for m in self.running_etcd()]
        return LabStatus(
            state_dir=str(self.state_dir), config=config, zones=zones, clients=clients, etcd=members
        )

    def _zone_status(self, zone: Zone) -> ZoneStatus:
        pid: int | None = None
        if not netns.exists(zone.namespace):
            state = "absent"
        else:
            pid = ganesha.running_pid(zone.pidfile, netns.pids(zone.namespace))
            if pid is None:
                state = "stopped"
            else:
                state = "cut-off" if _outage_active(zone.namespace) else "up"
        return ZoneStatus(
            name=zone.name,
            role=zone.role,
            namespace=zone.namespace,
            address=zone.address,
            export=zone.export,
            state=state,
            access=export_access(zone.conf, zone.folder) or "unknown",
            pid=pid,
        )

    # -- down --------------------------------------------------------------------------

    def down(self, progress: Progress | None = None) -> None:
        """Remove every namespace, process, rule and file the lab made, even after a crash."""
        say = progress or (lambda _msg: None)
        system.require_root()
        for client in self.clients:
            if hosts.qemu_pids(client.tap):
                say(f"{client.name}: powering off")
                hosts.stop(client.tap)
            netns.remove_link(client.tap)
        for host in self.controller_hosts:
            controller_host.remove(host)
        netns.remove_link(self.bridge)
        if self.forward_table in system.run(["nft", "list", "tables"], check=False).split():
            system.run(["nft", "delete", "table", "inet", self.forward_table])
        for member in self.etcd_members:
            etcd.remove(member, say)
        netns.remove_link(self.etcd_bridge)
        release_ip_forward(self._run_marker("ip_forward"))
        release_mount_root(self._run_marker("mount_root"))
        for zone in self.zones:
            if netns.exists(zone.namespace):
                say(f"{zone.name}: stopping its processes and removing {zone.namespace}")
                netns.stop_pids(netns.pids(zone.namespace))
                system.run(["ip", "netns", "del", zone.namespace])
            netns.remove_link(zone.host_veth)
        if (self.state_dir / MARKER).exists():
            say(f"removing {self.state_dir}")
            shutil.rmtree(self.state_dir)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.state_dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield


def _outage_active(namespace: str) -> bool:
    out = system.run(["ip", "netns", "exec", namespace, "nft", "list", "tables"], check=False)
    return f"inet {OUTAGE_TABLE}" in out


def _write_if_changed(path: Path, text: str) -> bool:
    """The lab's files are readable by root only."""
    return files.write_atomically(path, text, mode=0o600)


# The guests' root is the host's, read-only: autofs needs its mount root (/misc) there.
# Labs share it: each one up says so with its marker, and the last one down removes the
# folder if a lab made it (never one that was there before any lab).


def claim_mount_root(marker: Path, root: Path = hosts.MOUNT_ROOT) -> None:
    if not root.exists():
        root.mkdir(mode=0o755)
        _write_if_changed(marker.with_name("mount_root.made"), f"{root}\n")
    _write_if_changed(marker, f"{root}\n")


def release_mount_root(marker: Path, root: Path = hosts.MOUNT_ROOT) -> None:
    marker.unlink(missing_ok=True)
    made = marker.with_name("mount_root.made")
    if made.exists() and not any(marker.parent.glob("lab-*.mount_root")):
        with contextlib.suppress(OSError):  # left if something is mounted or put there
            root.rmdir()
        made.unlink()


# Routing (net.ipv4.ip_forward) is shared by labs too: the first one up keeps what it was,
# under /run, which lives as long as the sysctl does (so that `down` puts it back even when
# the state folder is gone), and the last one down puts it back.


def claim_ip_forward(marker: Path, sysctl: Path = IP_FORWARD) -> None:
    saved = _saved_ip_forward(marker)
    if not saved.exists():
        _write_if_changed(saved, sysctl.read_text())
    _write_if_changed(marker, "claimed\n")
    sysctl.write_text("1\n")


def release_ip_forward(marker: Path, sysctl: Path = IP_FORWARD) -> None:
    saved = _saved_ip_forward(marker)
    marker.unlink(missing_ok=True)
    if saved.exists() and not any(marker.parent.glob("lab-*.ip_forward")):
        sysctl.write_text(saved.read_text())
        saved.unlink()


def _saved_ip_forward(marker: Path) -> Path:
    """The file with the value before the first lab. A lab up under an earlier version
    kept that value in its own marker (a number, where a claim says "claimed"), which then
    stands for it."""
    saved = marker.with_name("ip_forward.saved")
    if not saved.exists():
        for old in marker.parent.glob("lab-*.ip_forward"):
            if old.read_text().strip().isdigit():
                _write_if_changed(saved, old.read_text())
                break
    return saved
