"""The real agent inside a client host, on the lab's etcd: agents on other machines than
the controller's, following the desired state through the store's watch.

The agent runs in the guest from the host's own installation (the guest's root is the
host's, under an overlay), with a config of its own: the lab's volume, the lab's etcd
cluster as its store, and the client's autofs files written where the guest's ``/etc``
links point (the client's shared folder), so that the host sees each map the moment the
guest's automount can read it.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from inotify_simple import INotify
from inotify_simple import flags as inotify_flags

from nfs_failover import files
from nfs_failover.config import Config, validate_config
from nfs_failover.desired import VolumeDesired
from nfs_failover.errors import LabError
from nfs_failover.lab import clients, etcd
from nfs_failover.lab.clients import ClientHost, check, exec_sync
from nfs_failover.lab.lab import Lab
from nfs_failover.steering.autofs_files import render
from nfs_failover.store import Store

MAP_FILE = Path("/etc/auto.nfs-failover")
MASTER_DROPIN = Path("/etc/auto.master.d/nfs-failover.autofs")


@dataclass(frozen=True)
class GuestAgent:
    """An agent process running in a client host."""

    client: ClientHost
    pid: int
    config: Config

    @property
    def name(self) -> str:
        return self.client.name

    @property
    def log(self) -> Path:
        return folder(self.client) / "agent.log"

    @property
    def map_file(self) -> Path:
        """The guest's map, as the host sees it."""
        return self.config.autofs.map_file


def folder(client: ClientHost) -> Path:
    return client.folder / "agent"


def guest_config(
    lab: Lab, client: ClientHost, *, interval: timedelta, prefix: str
) -> dict[str, Any]:
    """The lab's config as an agent in ``client`` runs it (the file's contents): the lab's
    etcd as its store (under ``prefix``), a cycle every ``interval`` (so that only the
    watch can deliver a change sooner), and the autofs files where the guest's own
    ``/etc`` links point."""
    members = lab.running_etcd()
    if not members:
        raise LabError("the lab has no etcd running (nfs-failover lab up --etcd 3)")
    data: dict[str, Any] = yaml.safe_load(lab.config_path.read_text())
    data["store"] = etcd.endpoints(members)
    data["etcd"] = {"prefix": prefix}
    # A decision needs at least one probe of its own: the grace periods cover a cycle.
    grace = max(interval, timedelta(seconds=5))
    data["policy"].update(
        probe_interval=_text(interval), failover_after=_text(grace), recover_after=_text(grace)
    )
    data["autofs"].update(
        root="/",
        mount_root=str(clients.MOUNT_ROOT),
        map_file=str(client.files_root / MAP_FILE.relative_to("/")),
        master_dropin=str(client.files_root / MASTER_DROPIN.relative_to("/")),
        applied_state=str(folder(client) / "applied.json"),
        pidfile=str(clients.AUTOMOUNT_PIDFILE),
    )
    data.pop("api", None)
    return data


def _text(duration: timedelta) -> str:
    return f"{duration.total_seconds():g}s"


def start(lab: Lab, client: ClientHost, *, interval: timedelta, prefix: str) -> GuestAgent:
    """Write the agent's config into the client's folder and start ``nfs-failover agent``
    in the guest, in the background (its log in that folder)."""
    data = guest_config(lab, client, interval=interval, prefix=prefix)
    place = folder(client)
    path = place / "config.yaml"
    config = validate_config(data, source=str(path))
    shutil.rmtree(place, ignore_errors=True)  # a new agent: no applied state of an old one
    place.mkdir(mode=0o700, parents=True)
    files.write_atomically(path, yaml.safe_dump(data, sort_keys=False), mode=0o600)
    # The host's virtual environment: the guest sees the host's files at the same paths.
    argv = [sys.executable, "-P", "-m", "nfs_failover", "agent"]
    argv += ["--config", str(path), "--name", client.name]
    pid = int(check(exec_sync(client, argv, timeout=10.0, detach=place / "agent.log")).text())
    return GuestAgent(client, pid, config)


def running(agent: GuestAgent) -> bool:
    return exec_sync(agent.client, ["kill", "-0", str(agent.pid)], timeout=10.0).ok


def stop(agent: GuestAgent, grace: float = 30.0) -> None:
    """SIGTERM, then SIGKILL if it has not ended within ``grace`` seconds."""
    exec_sync(agent.client, ["kill", "-TERM", str(agent.pid)], timeout=10.0)
    deadline = time.monotonic() + grace
    while running(agent):
        if time.monotonic() > deadline:
            exec_sync(agent.client, ["kill", "-KILL", str(agent.pid)], timeout=10.0)
            return
        time.sleep(0.2)


def wait_reporting(store: Store, volume: str, agents: list[GuestAgent], timeout: float) -> None:
    """Wait until every agent has written a report of ``volume`` (its first cycle is
    done: its maps are written and its watch is open). LabError naming the agents that
    exited or are still silent."""
    deadline = time.monotonic() + timeout
    names = {a.name for a in agents}
    while not names <= {r.agent for r in store.reports(volume)}:
        stopped = [a.name for a in agents if not running(a)]
        if stopped:
            raise LabError(f"agents exited: {', '.join(stopped)}; see {agents[0].log.parent}")
        if time.monotonic() > deadline:
            raise LabError(f"no report from {', '.join(sorted(names))} within {timeout:g}s")
        time.sleep(0.5)


def change(
    store: Store, agents: list[GuestAgent], new: VolumeDesired, timeout: float
) -> dict[str, float]:
    """Write ``new`` from the host (compare-and-swap on the stored generation) and wait
    for every agent's map to show it: the seconds each took, counted from before the
    write was sent (the write's own time included)."""
    current = store.get_desired(new.volume)
    texts = {a.name: render(a.config, {new.volume: new}).map_text for a in agents}
    expected = current.generation if current else None
    sent = time.monotonic()
    if not store.set_desired(new, expected_generation=expected):
        raise LabError(f"volume {new.volume}: the desired state changed under the change")
    seen = wait_for_maps(agents, texts, timeout=timeout)
    return {name: at - sent for name, at in seen.items()}


def wait_for_maps(
    agents: list[GuestAgent], texts: dict[str, str], timeout: float
) -> dict[str, float]:
    """Wait until each agent's map (as the host sees it) reads ``texts[agent.name]``; the
    monotonic time each one was first seen so. LabError naming the clients still behind
    at the deadline. Follows the files' folders with inotify: the time a map is seen is
    the time it was written, not that of the next look."""
    seen: dict[str, float] = {}
    with INotify() as notify:
        for place in {a.map_file.parent for a in agents}:  # each event: read every map again
            notify.add_watch(place, inotify_flags.MOVED_TO | inotify_flags.CLOSE_WRITE)
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            for agent in agents:
                if agent.name not in seen and _reads(agent.map_file) == texts[agent.name]:
                    seen[agent.name] = now
            if len(seen) == len(agents):
                return seen
            left = deadline - now
            if left <= 0:
                behind = sorted(a.name for a in agents if a.name not in seen)
                raise LabError(f"maps not changed within {timeout:g}s in {', '.join(behind)}")
            notify.read(timeout=int(min(left, 1.0) * 1000) or 1)


def _reads(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None
