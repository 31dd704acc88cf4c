"""Running the lab's system tools: argv lists only, each with a deadline.

No shell strings are built from values here; a tool that fails raises ``LabError`` with
what it printed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

from nfs_failover.errors import LabError

# Which Debian package brings each tool the lab runs.
TOOLS: dict[str, str] = {
    "ip": "iproute2",
    "nft": "nftables",
    "rpcbind": "rpcbind",
    "ganesha.nfsd": "nfs-ganesha (with nfs-ganesha-vfs)",
    "unshare": "util-linux",
    "mount": "mount",
}

GANESHA_VFS_FSAL = "libfsalvfs.so"
_FSAL_DIRS = (
    "/usr/lib/x86_64-linux-gnu/ganesha",
    "/usr/lib/aarch64-linux-gnu/ganesha",
    "/usr/lib64/ganesha",
    "/usr/lib/ganesha",
)

PACKAGES = "nfs-ganesha nfs-ganesha-vfs rpcbind nftables iproute2 rsync libnfs-utils autofs"


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError(
            "the lab needs root: it creates network namespaces and runs NFS servers "
            "(run it as root)"
        )


def missing_tools() -> list[str]:
    """Tools (with their Debian package) that are not installed, as readable strings."""
    missing = [f"{tool} (package {pkg})" for tool, pkg in TOOLS.items() if not which(tool)]
    if which("ganesha.nfsd") and not any(
        os.path.exists(os.path.join(d, GANESHA_VFS_FSAL)) for d in _FSAL_DIRS
    ):
        missing.append(f"{GANESHA_VFS_FSAL} (package nfs-ganesha-vfs)")
    return missing


def require_tools() -> None:
    missing = missing_tools()
    if missing:
        raise LabError(
            "the lab needs packages that are not installed: "
            + ", ".join(missing)
            + f"; install them with: apt-get install {PACKAGES}"
        )


def which(tool: str) -> str | None:
    # sbin folders are not on every root PATH (sudo, cron, CI runners).
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/bin:/bin"
    return shutil.which(tool, path=path)


def run(argv: Sequence[str], *, timeout: float = 10.0, check: bool = True) -> str:
    """Run a local tool and return its stdout; raise LabError if it fails or overruns."""
    exe = which(argv[0])
    if exe is None:
        raise LabError(f"{argv[0]} is not installed (package {TOOLS.get(argv[0], '?')})")
    try:
        proc = subprocess.run(
            [exe, *argv[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{' '.join(argv)}: no answer within {timeout:g}s") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        reason = detail[-1] if detail else f"exit status {proc.returncode}"
        raise LabError(f"{' '.join(argv)}: {reason}")
    return proc.stdout
