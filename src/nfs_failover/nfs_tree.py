"""Reading a whole export's tree over NFS with the project's own client, under a deadline.

Used where a provider cannot say which files changed (Azure NetApp Files, ONTAP): the
controller walks both replicas over NFS, the same way for every provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

from nfs_failover.config import Export
from nfs_failover.errors import ProtocolStatusError, RpcError
from nfs_failover.pacing import Deadline
from nfs_failover.rpc.mount import MOUNT_PROGRAM, MOUNT_VERSION, MountClient
from nfs_failover.rpc.nfs3 import NFS_PROGRAM, NFS_VERSION, Fattr3, Ftype3, Nfs3Client
from nfs_failover.rpc.portmap import PortmapClient

MAX_ENTRIES = 10_000_000
log = logging.getLogger(__name__)


async def open_export(export: Export, *, timeout: float) -> tuple[Nfs3Client, bytes]:
    """Connect to an export's nfs service and mount it: the client and the root handle."""
    deadline = Deadline(timeout)
    async with await PortmapClient.connect(export.host, timeout=timeout) as pmap:
        mount_port, nfs_port = await pmap.getports(
            [(MOUNT_PROGRAM, MOUNT_VERSION), (NFS_PROGRAM, NFS_VERSION)], timeout=deadline.left()
        )
    async with await MountClient.connect(export.host, mount_port, timeout=deadline.left()) as m:
        root = (await m.mnt(export.path)).fhandle
    nfs = await Nfs3Client.connect(export.host, nfs_port, timeout=deadline.left())
    return nfs, root


async def walk_export(
    export: Export, *, timeout: float, max_entries: int = MAX_ENTRIES
) -> dict[str, Fattr3]:
    """Every non-directory below the export's root, by relative path, with its attributes.

    Raises RpcError (or TimeoutError past ``timeout``); never waits longer.
    """
    deadline = Deadline(timeout)
    async with asyncio.timeout(timeout):
        nfs, root = await open_export(export, timeout=timeout)
        try:
            return await _walk(nfs, root, deadline, max_entries)
        finally:
            await nfs.close()


async def _walk(nfs: Nfs3Client, root: bytes, deadline: Deadline, limit: int) -> dict[str, Fattr3]:
    found: dict[str, Fattr3] = {}
    pending = [("", root)]
    while pending:
        prefix, handle = pending.pop()
        for entry in await nfs.listdir(handle, timeout=deadline.left()):
            if not safe_name(entry.name):
                log.warning("skipped a file the server names %r: not a safe file name", entry.name)
                continue
            path = f"{prefix}{entry.name}"
            fh, attrs = entry.fh, entry.attrs
            if fh is None or attrs is None:  # servers may leave them out: ask
                fh, attrs = await nfs.lookup(handle, entry.name, timeout=deadline.left())
                attrs = attrs or await nfs.getattr(fh, timeout=deadline.left())
            if attrs.type == Ftype3.DIR:
                pending.append((f"{path}/", fh))
            else:
                found[path] = attrs
            if len(found) > limit:
                raise RpcError(f"more than {limit} files below the export; giving up")
    return found


async def copy_out(
    export: Export, paths: list[str], target: Path, *, timeout: float, chunk: int = 64 * 1024
) -> tuple[list[str], list[str]]:
    """Copy files from an export into ``target`` over NFS: (copied, missing) paths.

    This is how a failback preserves what exists only on the old source, the same way
    for every provider: a file gone from the export is listed as missing, not an error.
    Paths come from a server, so they are not trusted: a path with an empty, ``.`` or
    ``..`` part or a NUL is not copied (listed as missing, with a warning), and every
    folder and file is opened below ``target`` without following a symlink, so nothing
    is ever written outside it.
    """
    deadline = Deadline(timeout)
    copied: list[str] = []
    missing: list[str] = []
    async with asyncio.timeout(timeout):
        nfs, root = await open_export(export, timeout=timeout)
        try:
            for path in paths:
                parts = path.split("/")
                if not all(map(safe_name, parts)):
                    log.warning("not copied: %r is not a safe path below %s", path, target)
                    missing.append(path)
                    continue
                handle = await _resolve(nfs, root, path, deadline)
                if handle is None:
                    missing.append(path)
                    continue
                try:
                    await _fetch(nfs, handle, target, parts, chunk=chunk, deadline=deadline)
                except OSError as exc:  # a symlink or a file where a folder should be
                    log.warning("not copied: %s below %s: %s", path, target, exc.strerror)
                    missing.append(path)
                    continue
                copied.append(path)
        finally:
            await nfs.close()
    return copied, missing


async def _resolve(nfs: Nfs3Client, root: bytes, path: str, deadline: Deadline) -> bytes | None:
    handle = root
    for part in path.split("/"):
        try:
            handle, _ = await nfs.lookup(handle, part, timeout=deadline.left())
        except ProtocolStatusError as exc:
            if exc.name == "NFS3ERR_NOENT":
                return None
            raise
    return handle


def safe_name(name: str) -> bool:
    """Whether a name from a server can be one component of a local path."""
    return name not in ("", ".", "..") and "/" not in name and "\0" not in name


def _open_below(target: Path, parts: list[str]) -> int:
    """A new file ``target/parts...`` (0600), opened for writing, its folders made as
    needed (0700); no symlink is followed on the way, so it never lands outside ``target``.
    Raises OSError (ELOOP, ENOTDIR, ...) otherwise."""
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for part in parts[:-1]:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o700, dir_fd=folder)
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=folder)
            os.close(folder)
            folder = inner
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
        return os.open(parts[-1], flags, 0o600, dir_fd=folder)
    finally:
        os.close(folder)


async def _fetch(
    nfs: Nfs3Client,
    handle: bytes,
    target: Path,
    parts: list[str],
    *,
    chunk: int,
    deadline: Deadline,
) -> None:
    offset = 0
    with os.fdopen(_open_below(target, parts), "wb") as out:
        while True:
            result = await nfs.read(handle, offset, chunk, timeout=deadline.left())
            out.write(result.data)
            offset += len(result.data)
            if result.eof or not result.data:
                return
