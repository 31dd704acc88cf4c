"""NFS-Ganesha in a lab zone: its config file, and starting and stopping it.

The config carries what the lab needs (docs/lab.md): NFSv3 mounts by the pseudo path (so
exports look like the seed's ``10.1.13.5:/crr-site1``) and a metadata cache that never
serves files changed behind Ganesha's back (the replication engine writes the folder).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nfs_failover.lab import system

NFS_PORT = 2049
MOUNT_PORT = 635
PORTMAP_PORT = 111

# Each zone gets its own /run, or its rpcbind collides with the other zone's through the
# shared socket (docs/lab.md). The script is fixed; paths reach it as positional arguments.
_ZONE_INIT = (
    "mount -t tmpfs -o mode=0755 tmpfs /run && mkdir -p /run/ganesha && rpcbind -w && "
    'exec ganesha.nfsd -f "$1" -L "$2" -p "$3" -N NIV_EVENT'
)


@dataclass(frozen=True)
class ExportSpec:
    """One Ganesha export: the folder, its NFS path and whether clients may write."""

    export_id: int
    folder: Path
    pseudo: str
    read_only: bool


def render_config(address: str, exports: list[ExportSpec], recovery_dir: Path) -> str:
    """The whole ganesha.conf of one zone."""
    blocks = [
        "NFS_CORE_PARAM {\n"
        f"    Protocols = 3, 4; NFS_Port = {NFS_PORT}; MNT_Port = {MOUNT_PORT};\n"
        f"    Bind_addr = {address}; Enable_RQUOTA = false; Enable_NLM = false;\n"
        "    Mount_Path_Pseudo = true;\n"
        "}",
        f"NFSV4 {{ Graceless = true; RecoveryRoot = {recovery_dir}; }}",
        "MDCACHE { Use_Getattr_Directory_Invalidation = true; Dir_Chunk = 0; }",
    ]
    for spec in exports:
        access = "RO" if spec.read_only else "RW"
        blocks.append(
            "EXPORT {\n"
            f"    Export_Id = {spec.export_id}; Path = {spec.folder}; Pseudo = {spec.pseudo};\n"
            f"    Access_Type = {access}; Squash = No_Root_Squash; SecType = sys;\n"
            "    Protocols = 3, 4; Transports = TCP, UDP; Attr_Expiration_Time = 0;\n"
            "    FSAL { Name = VFS; }\n"
            "}"
        )
    return "\n".join(blocks) + "\n"


def start(namespace: str, conf: Path, log: Path, pidfile: Path) -> None:
    """Start rpcbind and Ganesha in the zone's namespace with a private /run."""
    system.run(
        [
            "ip",
            "netns",
            "exec",
            namespace,
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            _ZONE_INIT,
            "zone-init",
            str(conf),
            str(log),
            str(pidfile),
        ],
        timeout=15,
    )


def running_pid(pidfile: Path, namespace_pids: set[int]) -> int | None:
    """Ganesha's pid when it runs inside the zone, else None."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    if pid not in namespace_pids:
        return None
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None
    return pid if comm.startswith("ganesha") else None
