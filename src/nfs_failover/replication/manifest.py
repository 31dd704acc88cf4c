"""The local engine's manifest: the destination tree as the last transfer left it.

One sqlite row per file (path, size, mtime, ctime). It is the last common point of the
two trees, so it is what lag and divergence are computed from. ctime cannot be set by
users, so any later change on either side shows up against it.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

Stat = tuple[int, int, int]  # size, mtime_ns, ctime_ns

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL
) WITHOUT ROWID;
"""


def walk(root: Path) -> Iterator[tuple[str, Stat]]:
    """Every file and symlink below ``root`` (directories only as containers), relative."""
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(root / rel if rel else root) as entries:
            for entry in entries:
                path = f"{rel}/{entry.name}" if rel else entry.name
                if entry.is_dir(follow_symlinks=False):
                    stack.append(path)
                    continue
                st = entry.stat(follow_symlinks=False)
                yield path, (st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def stat_of(root: Path, path: str) -> Stat | None:
    try:
        st = os.lstat(root / path)
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns


class Manifest:
    """The manifest file of one relationship."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Used from worker threads, one operation at a time (the provider holds a lock).
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        os.chmod(path, 0o600)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def rebuild(self, root: Path) -> int:
        """Replace the whole manifest with the tree under ``root``; returns the file count."""
        with self._transaction():
            self._db.execute("DELETE FROM files")
            rows = ((p, *s) for p, s in walk(root))
            self._db.executemany("INSERT INTO files VALUES (?, ?, ?, ?)", rows)
        return self.count()

    def update(self, root: Path, changed: Iterable[str], deleted: Iterable[str]) -> None:
        """Apply what a transfer reported: files it wrote and paths it deleted."""
        with self._transaction():
            for path in deleted:
                prefix = path.rstrip("/")
                self._db.execute(
                    "DELETE FROM files WHERE path = ? OR (path > ? AND path < ?)",
                    (prefix, prefix + "/", prefix + "0"),  # "0" sorts right after "/"
                )
            found = [(path, stat_of(root, path)) for path in changed]
            self._db.executemany(
                "DELETE FROM files WHERE path = ?", [(p,) for p, st in found if st is None]
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)",
                [(p, *st) for p, st in found if st is not None],
            )

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM files").fetchone()[0])

    def entries(self) -> dict[str, Stat]:
        rows = self._db.execute("SELECT path, size, mtime_ns, ctime_ns FROM files")
        return {path: (size, mtime, ctime) for path, size, mtime, ctime in rows}

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")


def changed_since(root: Path, manifest: dict[str, Stat], since_ns: int | None) -> list[str]:
    """Paths under ``root`` that differ from ``manifest``: added, removed or changed.

    With ``since_ns`` (the source side), a file also counts as changed when its ctime is
    at or after that instant: it may have changed after the transfer read it.
    """
    seen: set[str] = set()
    changed: list[str] = []
    for path, st in walk(root):
        seen.add(path)
        before = manifest.get(path)
        if since_ns is not None:
            if before is None or st[2] >= since_ns or st[:2] != before[:2]:
                changed.append(path)
        elif before != st:
            changed.append(path)
    changed.extend(p for p in manifest if p not in seen)
    return sorted(changed)
