"""Controlling a running NFS-Ganesha: which exports take writes, and rereading them.

The local replication engine makes a destination read-only and a broken one writable
by rewriting ``Access_Type`` in the EXPORT block of its folder and sending SIGHUP, on
which Ganesha rereads its exports (docs/lab.md).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
from pathlib import Path

from nfs_failover import files
from nfs_failover.errors import ProviderError

_EXPORT_BLOCK = re.compile(r"EXPORT\s*\{.*?\n\}", re.DOTALL)
_ACCESS = re.compile(r"Access_Type\s*=\s*\w+")


def set_access(config: Path, folder: Path, *, read_only: bool) -> bool:
    """Make the export of ``folder`` read-only or read-write; True if the file changed."""
    try:
        text = config.read_text()
    except OSError as exc:
        raise ProviderError(f"{config}: cannot read the Ganesha config ({exc.strerror})") from exc
    wanted = f"Access_Type = {'RO' if read_only else 'RW'}"
    found = False

    def rewrite(block: re.Match[str]) -> str:
        nonlocal found
        if not re.search(rf"Path\s*=\s*{re.escape(str(folder))}\s*;", block.group(0)):
            return block.group(0)
        found = True
        return _ACCESS.sub(wanted, block.group(0))

    new = _EXPORT_BLOCK.sub(rewrite, text)
    if not found:
        raise ProviderError(f"{config}: no EXPORT block with Path = {folder}")
    if new == text:
        return False
    try:
        files.write_atomically(config, new, mode=config.stat().st_mode & 0o777)
    except OSError as exc:
        raise ProviderError(f"{config}: cannot write the Ganesha config ({exc.strerror})") from exc
    return True


def export_access(config: Path, folder: Path) -> str | None:
    """``"ro"`` or ``"rw"`` for the export of ``folder``, or None if there is none."""
    with contextlib.suppress(OSError):
        for block in _EXPORT_BLOCK.finditer(config.read_text()):
            if re.search(rf"Path\s*=\s*{re.escape(str(folder))}\s*;", block.group(0)):
                access = _ACCESS.search(block.group(0))
                return access.group(0).rsplit("=", 1)[1].strip().lower() if access else None
    return None


def reload(pidfile: Path) -> None:
    """Tell Ganesha to reread its exports."""
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as exc:
        raise ProviderError(
            f"{pidfile}: cannot signal Ganesha to reload its exports ({exc})"
        ) from exc
