"""What the replication tests on the lab share: the deadline of each operation, the two
folders of a volume and what they hold, and a write over NFS as a client makes it."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from nfs_failover.config import Export, LocalReplication, Volume
from nfs_failover.rpc.mount import MountClient
from nfs_failover.rpc.nfs3 import Nfs3Client
from nfs_failover.rpc.portmap import PortmapClient

T = 30.0  # every operation's deadline


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def empty(folder: Path) -> None:
    """Remove what a folder holds; the folder itself is an export root Ganesha holds."""
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def settle() -> None:
    """Put the coarse file clock's tick between a write and a transfer's start."""
    time.sleep(0.1)


def folders(volume: Volume) -> tuple[Path, Path]:
    settings = volume.replication
    assert isinstance(settings, LocalReplication)
    return Path(settings.source_path), Path(settings.destination_path)


async def nfs_write(export: Export, name: str) -> None:
    host, path = export.host, export.path
    async with await PortmapClient.connect(host, timeout=2) as pmap:
        port = await pmap.getport(100005, 3)
    async with await MountClient.connect(host, port, timeout=2) as mountd:
        root = (await mountd.mnt(path)).fhandle
    async with await Nfs3Client.connect(host, timeout=2) as nfs:
        fh = await nfs.create(root, name)
        await nfs.write(fh, 0, b"written over NFS")
