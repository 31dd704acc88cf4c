"""One transfer of the local engine's data path, on two folders: the tracker's changes
turned into the list of paths rsync must look at, rsync, and the destination's manifest.

The list is built so that rsync leaves the destination exactly as a walk of the whole
tree would (``rsync.WHOLE``):
- a changed path is sent as it is now: written, or deleted when it is gone; a path
  below something that is no longer a folder is replaced by that something;
- a folder that appeared (created, or moved in or within the tree) is listed whole, and
  so is what the destination holds at that name, so what is not on the source goes;
- the parent of each listed path is listed too: adding or removing an entry changes its
  modification time, which rsync -a copies;
- every name of a hard-linked file is listed (rsync -a copies each name as a file of its
  own, so a change through one name is a change of all); a name the tracker cannot
  account for means a walk of the whole tree.
This module owns no state and needs no network: the engine checks the source over NFS
and records the relationship around it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from nfs_failover.errors import ProviderError
from nfs_failover.pacing import Deadline
from nfs_failover.replication import rsync
from nfs_failover.replication.base import Progress
from nfs_failover.replication.manifest import Manifest
from nfs_failover.replication.tracker import Batch, Inode, LinkIndex, Tracker, join

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Listing:
    """The paths rsync must look at (``.`` is the folder itself), or why the whole tree
    must be walked instead."""

    paths: tuple[str, ...]
    walk: str | None = None


@dataclass(frozen=True)
class Transferred:
    """What a transfer did. The destination holds every change made on the source before
    ``started`` (and perhaps some made after)."""

    started: float
    ended: float
    sent: int  # bytes
    files: int  # files written and paths deleted
    walked: str | None  # why it walked the whole tree, or None: it sent the changes
    listed: int  # paths rsync was given (0 for a walk)
    untracked: str | None = None  # the tracker could not be restarted: why


class _Side:
    """One folder's entries, each looked at once per transfer (lstat, never following
    a symbolic link)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._stats: dict[str, os.stat_result | None] = {}

    def stat(self, path: str) -> os.stat_result | None:
        if path not in self._stats:
            try:
                self._stats[path] = os.lstat(self.root / path if path else self.root)
            except (FileNotFoundError, NotADirectoryError):
                self._stats[path] = None
        return self._stats[path]

    def is_dir(self, path: str) -> bool:
        st = self.stat(path)
        return st is not None and stat.S_ISDIR(st.st_mode)

    def anchor(self, path: str) -> str:
        """``path``, or its first ancestor that is not a folder here (gone, a file, a
        symbolic link): what rsync must be given so as to replace or delete it."""
        parts = path.split("/") if path else []
        for depth in range(1, len(parts)):
            ancestor = "/".join(parts[:depth])
            if not self.is_dir(ancestor):
                return ancestor
        return path

    def entries(self, folder: str) -> dict[str, bool]:
        """Names in ``folder`` and whether each is a folder; empty if it is none."""
        try:
            with os.scandir(self.root / folder if folder else self.root) as found:
                return {e.name: e.is_dir(follow_symlinks=False) for e in found}
        except (FileNotFoundError, NotADirectoryError):
            return {}


def listing(source: Path, destination: Path, batch: Batch, links: LinkIndex) -> Listing:
    """The paths that make the destination what a walk of the whole tree would make it,
    given every change in ``batch`` (blocking: it looks at both folders)."""
    src, dst = _Side(source), _Side(destination)
    wanted = {src.anchor(path) for path in batch.changed}
    for top in _outermost(batch.fresh):
        anchored = src.anchor(top)
        wanted.add(anchored)
        if anchored == top and src.is_dir(top):
            wanted.update(_union(src, dst, top))
    walk = _with_links(src, wanted, links)
    if walk is not None:
        return Listing((), walk)
    wanted.update([path.rpartition("/")[0] for path in wanted if path])
    return Listing(tuple(sorted(path or "." for path in wanted)))


def _outermost(folders: Iterable[str]) -> list[str]:
    """The folders not below another one of them."""
    chosen = set(folders)
    return sorted(
        path
        for path in chosen
        if not any("/".join(path.split("/")[:d]) in chosen for d in range(1, path.count("/") + 1))
    )


def _union(src: _Side, dst: _Side, top: str) -> Iterator[str]:
    """Every path below ``top`` on the source, and every one on the destination that
    the source lacks (those only as high up as they differ)."""
    stack = [top]
    while stack:
        folder = stack.pop()
        here, there = src.entries(folder), dst.entries(folder)
        for name, is_dir in here.items():
            path = join(folder, name)
            yield path
            if is_dir:
                stack.append(path)
        for name in there.keys() - here.keys():
            yield join(folder, name)


def _with_links(src: _Side, wanted: set[str], links: LinkIndex) -> str | None:
    """Add every name of each hard-linked file in ``wanted``; a reason to walk the
    whole tree when some names are unknown."""
    groups: dict[Inode, set[str]] = {}
    counts: dict[Inode, int] = {}
    for path in wanted:
        st = src.stat(path)
        if st is not None and stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            inode = (st.st_dev, st.st_ino)
            groups.setdefault(inode, set()).add(path)
            counts[inode] = st.st_nlink
    for inode, names in groups.items():
        known = links.known(inode)
        valid = {name for name in names | (known or set()) if _is(src, name, inode)}
        if known is None and len(valid) < counts[inode]:
            return f"{min(names)} has hard links the tracker has not seen"
        links.set(inode, valid)
        wanted.update(valid)
    return None


def _is(src: _Side, name: str, inode: Inode) -> bool:
    st = src.stat(name)
    return st is not None and src.anchor(name) == name and (st.st_dev, st.st_ino) == inode


async def transfer(
    source: Path,
    destination: Path,
    manifest: Manifest,
    deadline: Deadline,
    *,
    tracker: Tracker | None = None,
    walk: str | None = None,
    progress: Progress | None = None,
    rsync_pid: Callable[[int | None], None] | None = None,
) -> Transferred:
    """Bring ``destination`` up to date with ``source``: only the tracker's changes, or
    the whole tree when ``walk`` gives a reason, when there is no tracker, or when the
    tracker cannot vouch for its changes. A tracker whose watches may be incomplete gets
    a new set before a walk. ``rsync_pid`` hears rsync's pid when it starts and None
    when it has ended. Raises what ``rsync.run`` raises; the tracker's changes are then
    pending again.
    """
    untracked = None
    walked: str | None
    if tracker is None:
        batch, walked = None, walk or "changes are not tracked"
    else:
        batch = tracker.take()
        walked = walk or batch.missed
    listed: tuple[str, ...] = ()
    if tracker is not None and batch is not None and walked is None:
        found = await asyncio.to_thread(listing, source, destination, batch, tracker.links)
        if found.walk is not None:
            tracker.miss(found.walk, rewatch=True)
        walked, listed = found.walk, found.paths
    if tracker is not None and batch is not None and walked is not None and tracker.needs_rewatch:
        tracker.settle(batch, done=False, full=False)
        try:
            await asyncio.to_thread(tracker.rewatch)
            batch = tracker.take()
        except ProviderError as exc:
            log.warning("%s", exc)
            batch, untracked = None, str(exc)
    started = batch.taken if batch is not None else time.time()
    try:
        copied = await _copy(
            source,
            destination,
            manifest,
            deadline,
            walked=walked,
            listed=listed,
            progress=progress,
            rsync_pid=rsync_pid,
        )
    except BaseException:
        if tracker is not None and batch is not None:
            tracker.settle(batch, done=False, full=False)
        raise
    if tracker is not None and batch is not None:
        tracker.settle(batch, done=True, full=walked is not None)
    return Transferred(
        started=started,
        ended=time.time(),
        sent=copied.sent,
        files=len(copied.changed) + len(copied.deleted),
        walked=walked,
        listed=len(listed),
        untracked=untracked,
    )


async def _copy(
    source: Path,
    destination: Path,
    manifest: Manifest,
    deadline: Deadline,
    *,
    walked: str | None,
    listed: tuple[str, ...],
    progress: Progress | None,
    rsync_pid: Callable[[int | None], None] | None,
) -> rsync.Copied:
    """rsync, then the manifest: rebuilt after a walk, updated from rsync's report."""
    if walked is None and not listed:
        return rsync.Copied((), (), 0)  # nothing changed: nothing to look at
    paths = None if walked is not None else listed
    copied = await rsync.run(
        source, destination, deadline, paths=paths, progress=progress, started=rsync_pid
    )
    if rsync_pid is not None:
        rsync_pid(None)
    if walked is not None:
        await asyncio.to_thread(manifest.rebuild, destination)
    else:
        await asyncio.to_thread(manifest.update, destination, copied.changed, copied.deleted)
    return copied
