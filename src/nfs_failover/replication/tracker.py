"""The local engine's change tracker: which paths of the source folder changed, as they
change, so that a transfer sends only those and not a walk of the whole tree.

How: inotify, one watch per folder of the tree (``inotify_simple``, a thin ctypes
binding), read by a thread of its own so the kernel's queue never fills while a transfer
runs. The replicas are NFS-Ganesha exports (VFS FSAL): a client's write arrives as an
ordinary system call of the ganesha process on the local filesystem, so the watches see
it like any local write.

Why inotify and not fanotify. fanotify with a filesystem mark (``FAN_MARK_FILESYSTEM``,
``FAN_REPORT_DFID_NAME``, Linux 5.9) needs no watch per folder, so it has no limit to
hit and no race with new folders, and it reports changes by inode, also those made
through a handle the kernel cannot place in the tree. But it needs CAP_SYS_ADMIN, it
reports every change on the whole filesystem (the destination folder and anything else
stored there), it names folders by file handles that must be opened to find their path
(racing renames and deletes), it works only on filesystems with exportable handles, and
Python has no maintained binding for its handle-reporting modes. inotify needs no
privilege, works on any local filesystem, and sees only the tree.

What inotify misses, and what covers it:
- events beyond the kernel's queue (``IN_Q_OVERFLOW``), the source folder itself moved,
  deleted or unmounted, or the watch limit (``fs.inotify.max_user_watches``) reached:
  the tracker says so (``missed``) and the next transfer walks the whole tree, on a new
  set of watches;
- changes made while it was not running (before a start, after a crash): a tracker
  starts out ``missed``, so the first transfer after a start walks the whole tree;
- files created in a new folder before its watch exists: a new folder (created or moved
  in) is recorded as *fresh*, and the transfer lists everything under it, on both sides;
- a change to a hard-linked file reports only the name it was made through: the
  tracker's walk records every name of each inode with several links, and a transfer
  sends all of them (``LinkIndex``); a name it cannot account for means a full walk;
- changes it cannot see at all: writes through a shared ``mmap`` (only the writer's
  close shows, as ``IN_CLOSE_WRITE``), writes through a hard link outside the tree, and
  writes through a handle whose dentry the kernel cannot connect to its folder (a file
  Ganesha reopens by handle after the kernel dropped it from its cache: the event goes
  to the file's own watches, not its folder's). fanotify would see the last two; the
  safety walk (``full_walk_interval``) covers all three.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import inotify_simple

from nfs_failover.errors import ProviderError

log = logging.getLogger(__name__)

F = inotify_simple.flags
WATCH_MASK = (
    F.CREATE
    | F.DELETE
    | F.MODIFY
    | F.ATTRIB
    | F.CLOSE_WRITE
    | F.MOVED_FROM
    | F.MOVED_TO
    | F.DELETE_SELF
    | F.MOVE_SELF
    | F.ONLYDIR
    | F.DONT_FOLLOW
    | F.EXCL_UNLINK
)
# After the first event of a burst the reader waits this long (or until stopped) before
# it reads: at 1,000 files rewritten, a tenth of the CPU of reading them one by one.
GATHER_MS = 5
# Beyond this many changed paths a walk of the whole tree is cheaper than the list.
MAX_PENDING = 200_000
STARTED = "changes made while the tracker was not running are unknown"

Inode = tuple[int, int]  # st_dev, st_ino


def join(folder: str, name: str) -> str:
    """A path relative to the tracked folder; ``""`` is the folder itself."""
    if not name:
        return folder
    return f"{folder}/{name}" if folder else name


@dataclass(frozen=True)
class Batch:
    """The changes a transfer takes: every change made before ``taken`` is in it.

    ``changed`` maps each changed path (relative; ``""`` is the folder itself) to when the
    tracker first saw it change; ``fresh`` lists folders that appeared (created or moved
    in), whose whole content is new. ``missed`` says why the tracker cannot vouch for the
    batch (the transfer must walk the whole tree), or is None.
    """

    taken: float
    changed: Mapping[str, float]
    fresh: Mapping[str, float]
    missed: str | None

    @property
    def oldest(self) -> float | None:
        times = [*self.changed.values(), *self.fresh.values()]
        return min(times) if times else None

    def __bool__(self) -> bool:
        return bool(self.changed or self.fresh)


@dataclass
class LinkIndex:
    """Every name in the tree of each inode with more than one link, as the tracker's
    walk found them and transfers since have confirmed. An inode absent from it had one
    link at the walk (or appeared since)."""

    names: dict[Inode, set[str]] = field(default_factory=dict)

    def add(self, inode: Inode, path: str) -> None:
        self.names.setdefault(inode, set()).add(path)

    def known(self, inode: Inode) -> set[str] | None:
        return self.names.get(inode)

    def set(self, inode: Inode, paths: Iterable[str]) -> None:
        self.names[inode] = set(paths)


class Tracker:
    """The changes of one folder's tree since the last batch was taken.

    ``start`` (blocking: it walks the tree) and ``close`` bracket its life; ``take``
    hands the changes to a transfer and ``settle`` tells how it ended. Thread-safe:
    a reader thread records events as they come; ``take`` also reads what is queued, so
    a batch holds every change made before it was taken. ``on_change`` is called (from
    any thread) when the first change after a quiet time arrives, and when the tracker
    misses events.
    """

    def __init__(
        self,
        root: Path,
        *,
        on_change: Callable[[], None] | None = None,
        background: bool = True,
    ) -> None:
        self.root = root
        self.on_change = on_change
        self.background = background  # False: events are read only by take()
        self.links = LinkIndex()
        self._lock = threading.RLock()
        self._inotify: inotify_simple.INotify | None = None
        self._thread: threading.Thread | None = None
        self._stop_r, self._stop_w = -1, -1
        self._paths: dict[int, str] = {}  # watch descriptor -> folder
        self._children: dict[str, set[str]] = {}  # folder -> its watched subfolders
        self._wds: dict[str, int] = {}  # folder -> watch descriptor
        self._pending: dict[str, float] = {}
        self._fresh: dict[str, float] = {}
        self._inflight: Batch | None = None
        self._last_change: float | None = None
        self._missed: str | None = STARTED
        self._missed_at = time.time()
        self._rewatch = False

    # -- life ---------------------------------------------------------------------------

    def start(self) -> None:
        """Watch the whole tree; raises ProviderError when the folder cannot be watched.

        Until a transfer that walks the whole tree has started after this, the tracker
        says ``missed``: it cannot know what changed before.
        """
        with self._lock:
            self._open()
        self._walk("", index=True)
        with self._lock:
            failed = self._missed if self._rewatch else None
            self._missed, self._missed_at, self._rewatch = STARTED, time.time(), False
            self._pending.clear()
            self._fresh.clear()
        if failed is not None:
            self.close()
            raise ProviderError(f"{self.root}: cannot track changes: {failed}")

    def rewatch(self) -> None:
        """A new set of watches after a miss (blocking, like ``start``)."""
        self.close()
        self.links = LinkIndex()
        self.start()

    def close(self) -> None:
        with self._lock:
            thread, inotify = self._thread, self._inotify
            self._thread, self._inotify = None, None
            if self._stop_w >= 0:
                os.write(self._stop_w, b"x")
        if thread is not None:
            thread.join(timeout=5.0)
        with self._lock:
            for fd in (self._stop_r, self._stop_w):
                if fd >= 0:
                    os.close(fd)
            self._stop_r, self._stop_w = -1, -1
            if inotify is not None:
                inotify.close()
            self._paths.clear()
            self._children.clear()
            self._wds.clear()

    def _open(self) -> None:
        self.close()
        if not self.root.is_dir():
            raise ProviderError(f"{self.root}: not a folder; its changes cannot be tracked")
        try:
            self._inotify = inotify_simple.INotify()
        except OSError as exc:
            raise ProviderError(f"{self.root}: cannot track changes: {exc}") from exc
        self._missed, self._rewatch = STARTED, False
        try:
            watched = self._watch_folder("")
        except OSError as exc:
            watched, self._missed = False, str(exc)
        if not watched:
            self._inotify.close()
            self._inotify = None
            raise ProviderError(f"{self.root}: cannot track changes: {self._missed}")
        if self.background:
            self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)
            self._thread = threading.Thread(
                target=self._read_forever, name=f"tracker {self.root}", daemon=True
            )
            self._thread.start()

    # -- what the engine asks -------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether it watches (started, and not closed since)."""
        with self._lock:
            return self._inotify is not None

    @property
    def missed(self) -> str | None:
        """Why the next transfer must walk the whole tree, or None."""
        with self._lock:
            return self._missed

    @property
    def needs_rewatch(self) -> bool:
        """Whether the watches themselves may be incomplete (a new set is needed)."""
        with self._lock:
            return self._rewatch

    def oldest(self) -> float | None:
        """When the oldest change not yet on the destination was seen (a batch in flight
        counts), or None when there is none."""
        with self._lock:
            times = [*self._pending.values(), *self._fresh.values()]
            if self._inflight is not None and self._inflight.oldest is not None:
                times.append(self._inflight.oldest)
            return min(times) if times else None

    def last_change(self) -> float | None:
        with self._lock:
            return self._last_change

    def pending(self) -> bool:
        with self._lock:
            return bool(self._pending or self._fresh)

    def take(self) -> Batch:
        """The changes so far, for a transfer: every change made before the call is in."""
        taken = time.time()
        with self._lock:
            self._drain()
            batch = Batch(taken, self._pending, self._fresh, self._missed)
            self._pending, self._fresh = {}, {}
            self._inflight = batch
            return batch

    def settle(self, batch: Batch, *, done: bool, full: bool) -> None:
        """The transfer of ``batch`` ended: ``done`` (its changes are on the destination;
        ``full``: it walked the whole tree) or failed (they are pending again)."""
        with self._lock:
            if self._inflight is batch:
                self._inflight = None
            if not done:
                for pending, seen in ((self._pending, batch.changed), (self._fresh, batch.fresh)):
                    for path, when in seen.items():
                        pending[path] = min(when, pending.get(path, when))
            elif full and not self._rewatch and self._missed and self._missed_at < batch.taken:
                self._missed = None

    def miss(self, reason: str, *, rewatch: bool = False) -> None:
        """Something the tracker cannot vouch for: the next transfer walks the tree."""
        with self._lock:
            self._missed, self._missed_at = reason, time.time()
            self._rewatch = self._rewatch or rewatch
        log.info("%s: a full walk is needed: %s", self.root, reason)
        if self.on_change is not None:
            self.on_change()

    # -- reading events -------------------------------------------------------------------

    def _read_forever(self) -> None:
        poller = select.poll()
        with self._lock:
            if self._inotify is None:
                return
            poller.register(self._inotify.fileno(), select.POLLIN)
            stop = self._stop_r
        poller.register(stop, select.POLLIN)
        stopper = select.poll()
        stopper.register(stop, select.POLLIN)
        try:
            while True:
                ready = poller.poll()
                if any(fd == stop for fd, _ in ready):
                    return
                # Let a burst gather: one read for many events, and the kernel merges
                # repeats meanwhile. Each change is seen at most this much later.
                if stopper.poll(GATHER_MS):
                    return
                with self._lock:
                    if self._inotify is None:
                        return
                    self._drain()
        except Exception as exc:  # a bug or a failing kernel call: say so, walk next time
            log.exception("%s: the change tracker stopped", self.root)
            self.miss(f"the change tracker stopped: {exc}", rewatch=True)

    def _drain(self) -> None:
        """Record every event queued now (called with the lock held)."""
        while self._inotify is not None:
            events = self._inotify.read(timeout=0)
            if not events:
                return
            now = time.time()
            for event in events:
                self._record(event.wd, event.mask, event.name, now)

    def _record(self, wd: int, mask: int, name: str, now: float) -> None:
        if mask & F.Q_OVERFLOW:
            self.miss("the kernel's event queue overflowed", rewatch=True)
            return
        folder = self._paths.get(wd)
        if folder is None:
            return  # a watch already dropped: its folder's own events said what happened
        if mask & F.IGNORED:
            self._drop(wd, folder)
            if not folder:
                self.miss("the source folder's watch was removed", rewatch=True)
            return
        if mask & F.UNMOUNT:
            self.miss("the source folder's filesystem was unmounted", rewatch=True)
            return
        if not name and mask & (F.DELETE_SELF | F.MOVE_SELF):
            if not folder:
                self.miss("the source folder itself was moved or deleted", rewatch=True)
            return  # a subfolder: its parent's event says where it went
        path = join(folder, name)
        self._mark(path, now)
        if mask & F.ISDIR and name:
            if mask & (F.MOVED_FROM | F.DELETE):
                self._unwatch(path)
            elif mask & (F.CREATE | F.MOVED_TO):
                self._fresh.setdefault(path, now)
                self._walk(path, index=False)

    def _mark(self, path: str, now: float) -> None:
        quiet = not (self._pending or self._fresh)
        self._pending.setdefault(path, now)
        self._last_change = now
        if len(self._pending) > MAX_PENDING:
            self._pending.clear()
            self._fresh.clear()
            self.miss(f"more than {MAX_PENDING} paths changed: a full walk is cheaper")
        elif quiet and self.on_change is not None:
            self.on_change()

    # -- the watches ----------------------------------------------------------------------

    def _walk(self, top: str, *, index: bool) -> None:
        """Watch ``top`` and every folder below it; with ``index``, record the names of
        inodes with several links. A watch is added before its folder is listed, so an
        entry made in between shows as an event, as a listed entry, or as both."""
        stack = [top]
        while stack:
            folder = stack.pop()
            with self._lock:
                if not self._watch_folder(folder):
                    continue
            try:
                with os.scandir(self.root / folder if folder else self.root) as entries:
                    for entry in entries:
                        path = join(folder, entry.name)
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(path)
                        elif index:
                            st = entry.stat(follow_symlinks=False)
                            if st.st_nlink > 1:
                                self.links.add((st.st_dev, st.st_ino), path)
            except (FileNotFoundError, NotADirectoryError):
                continue  # gone again: its parent's events say what became of it

    def _watch_folder(self, folder: str) -> bool:
        """Add one folder's watch (lock held); False when it is gone or not a folder."""
        if self._inotify is None:
            return False
        try:
            wd = self._inotify.add_watch(self.root / folder if folder else self.root, WATCH_MASK)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return False
            if exc.errno == errno.ENOSPC:
                self.miss(
                    "the inotify watch limit is reached (fs.inotify.max_user_watches)",
                    rewatch=True,
                )
                return False
            raise
        previous = self._paths.get(wd)
        if previous is not None and previous != folder:
            self._forget(previous)  # the same folder, seen again under its new name
        self._paths[wd] = folder
        self._wds[folder] = wd
        if folder:
            self._children.setdefault(folder.rpartition("/")[0], set()).add(folder)
        return True

    def _unwatch(self, top: str) -> None:
        """Drop the watches of a folder that went (deleted, or moved away or elsewhere:
        a move within the tree shows up again as a fresh folder)."""
        stack = [top]
        while stack:
            folder = stack.pop()
            stack.extend(self._children.get(folder, ()))
            wd = self._wds.get(folder)
            self._forget(folder)
            if wd is not None and self._inotify is not None:
                with contextlib.suppress(OSError):  # already gone with its folder
                    self._inotify.rm_watch(wd)

    def _drop(self, wd: int, folder: str) -> None:
        """A watch the kernel removed (its folder is gone). The folder's name may already
        be watched again, on the folder that replaced it: that watch stays."""
        del self._paths[wd]
        if self._wds.get(folder) == wd:
            self._forget(folder)

    def _forget(self, folder: str) -> None:
        wd = self._wds.pop(folder, None)
        if wd is not None and self._paths.get(wd) == folder:
            del self._paths[wd]
        self._children.pop(folder, None)
        if folder:
            siblings = self._children.get(folder.rpartition("/")[0])
            if siblings is not None:
                siblings.discard(folder)
