"""The two autofs files nfs-failover owns, rendered from the desired state.

It never touches a user's own maps: it writes a master-map drop-in and one indirect map,
atomically and only when their content changes, then asks automount to reload. Each
volume's entry lists the replicas its clients may use now, in order, with weights and
``use-weight-only`` so the real daemon keeps that order (it otherwise sorts by ping time).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from nfs_failover import files
from nfs_failover.config import Config, Volume
from nfs_failover.desired import VolumeDesired, normal
from nfs_failover.errors import SteeringError
from nfs_failover.steering.autofs_render import (
    HEADER,
    foreign_file,
    map_host,
    preference_entry,
    render_master_line,
)
from nfs_failover.steering.machine import Machine


@dataclass(frozen=True)
class Rendered:
    """The managed files' paths on this host and their wanted content."""

    master_dropin: Path
    master_text: str
    map_file: Path
    map_text: str


@dataclass(frozen=True)
class Applied:
    changed: tuple[Path, ...]
    reload: str  # what was done to make automount reread its maps, or why nothing was


def desired_for(config: Config, stored: Mapping[str, VolumeDesired]) -> dict[str, VolumeDesired]:
    """The stored state of each volume, or its normal state where none is stored yet."""
    return {
        v.name: stored.get(v.name) or normal(v, config.effective_policy(v).read_only_fallback)
        for v in config.volumes
    }


def render(config: Config, desired: Mapping[str, VolumeDesired]) -> Rendered:
    settings = config.autofs
    map_file = settings.under_root(settings.map_file)
    mount_root = settings.under_root(settings.mount_root)
    options = [
        f"--timeout={int(settings.timeout.total_seconds())}",
        f"--negative-timeout={int(settings.negative_timeout.total_seconds())}",
    ]
    master = HEADER + render_master_line(str(mount_root), str(map_file), options) + "\n"
    entries = [_entry(volume, desired[volume.name]) for volume in config.volumes]
    return Rendered(
        master_dropin=settings.under_root(settings.master_dropin),
        master_text=master,
        map_file=map_file,
        map_text=HEADER + "".join(f"{line}\n" for line in entries if line),
    )


def _entry(volume: Volume, desired: VolumeDesired) -> str:
    """The volume's map line, or none at all when no replica may be offered."""
    exports = {replica.name: replica.export for replica in volume.replicas}
    hosts = [(map_host(exports[name].host), exports[name].path) for name in desired.offered]
    if not hosts:
        return ""
    options = ["fstype=nfs", *(o for o in volume.mount.options.split(",") if o)]
    return preference_entry(volume.map_key, options, hosts)


def apply(
    config: Config,
    desired: Mapping[str, VolumeDesired],
    *,
    reload: bool = True,
    machine: Machine | None = None,
) -> Applied:
    """Write what changed (atomically), then reload automount; raises SteeringError on a
    failed write or reload. A map that is already right is not touched. ``machine`` is the
    client whose files these are (default: this host)."""
    rendered = render(config, desired)
    place = machine.files_path if machine else (lambda path: path)
    # The map first: a new master line must never point at a map not written yet.
    files = ((rendered.map_file, rendered.map_text), (rendered.master_dropin, rendered.master_text))
    changed = tuple(path for path, text in files if write_atomically(place(path), text))
    if not changed or not reload:
        return Applied(changed, "nothing to reload" if not changed else "reload skipped")
    # A rooted set-up (the lab, tests) runs its own automount: never the host's service.
    host_autofs = config.autofs.root == Path("/")
    pidfile = config.autofs.pidfile
    if machine:
        return Applied(changed, machine.reload_automount(pidfile, systemd=host_autofs))
    return Applied(changed, reload_automount(pidfile, systemd=host_autofs))


def write_atomically(path: Path, text: str) -> bool:
    """Write a managed file atomically, only when it changes; False when it did not.

    Mode 0644: a map with the owner-execute bit would be run as a program map. A file
    there that nfs-failover did not write (a user's map, /etc/passwd) is never replaced.
    """
    if foreign_file(path):
        raise SteeringError(
            f"{path}: exists and was not written by nfs-failover; refusing to overwrite it"
            " (choose another autofs.map_file or autofs.master_dropin)"
        )
    try:
        return files.write_atomically(path, text, mode=0o644)
    except OSError as exc:
        raise SteeringError(f"{path}: cannot write ({exc.strerror})") from exc


def reload_automount(pidfile: Path, *, systemd: bool = True) -> str:
    """``systemctl reload autofs`` where systemd runs it (and ``systemd`` allows it), else
    SIGHUP to the pid in ``pidfile``; a daemon that is not running has nothing to reload
    (said, not raised)."""
    if systemd and _systemd_runs_autofs():
        done = subprocess.run(
            ["systemctl", "reload", "autofs"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            raise SteeringError(f"systemctl reload autofs failed: {done.stderr.strip()}")
        return "systemctl reload autofs"
    try:
        pid = int(pidfile.read_text().strip())
    except FileNotFoundError:
        return f"automount is not running ({pidfile} does not exist): nothing to reload"
    except (OSError, ValueError) as exc:
        raise SteeringError(f"{pidfile}: unreadable pid file ({exc})") from exc
    # 0 would signal our own process group, -1 every process: only a positive pid that
    # is an automount process gets the SIGHUP.
    if pid <= 0:
        raise SteeringError(f"{pidfile}: holds {pid}, not the pid of a process")
    try:
        command = Path(f"/proc/{pid}/comm").read_text().strip()
    except FileNotFoundError:
        raise SteeringError(f"{pidfile}: automount (pid {pid}) is not running") from None
    except OSError as exc:
        raise SteeringError(f"{pidfile}: cannot tell what pid {pid} is ({exc.strerror})") from None
    if command != "automount":
        raise SteeringError(f"{pidfile}: pid {pid} is {command!r}, not automount; not signalled")
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError as exc:
        raise SteeringError(f"{pidfile}: automount (pid {pid}) is not running") from exc
    return f"SIGHUP to automount (pid {pid})"


def _systemd_runs_autofs() -> bool:
    if not Path("/run/systemd/system").is_dir() or shutil.which("systemctl") is None:
        return False
    done = subprocess.run(
        ["systemctl", "is-active", "--quiet", "autofs"],
        timeout=10,
        check=False,
        capture_output=True,
    )
    return done.returncode == 0
