"""Trees for the data path's tests, on plain folders: what rsync -a copies of a tree (to
compare two destinations), and random changes of every kind a tree can undergo."""

from __future__ import annotations

import os
import random
import shutil
import stat
from pathlib import Path

ROOT_UID = os.geteuid() == 0


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything ``rsync -a`` carries, per path ("." is the folder itself): the type,
    mode, owner, modification time, and a file's content or a link's target."""
    seen: dict[str, tuple[object, ...]] = {}
    for folder, dirs, names in os.walk(root):
        for name in ["", *dirs, *names]:
            path = Path(folder, name) if name else Path(folder)
            rel = str(path.relative_to(root)) if path != root else "."
            st = os.lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            if stat.S_ISREG(st.st_mode):
                body: object = path.read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                body = os.readlink(path)
            else:
                body = None
            seen[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns, body)
    return seen


def differences(left: dict[str, tuple[object, ...]], right: dict[str, tuple[object, ...]]) -> str:
    lines = []
    for path in sorted(left.keys() | right.keys()):
        a, b = left.get(path), right.get(path)
        if a != b:
            lines.append(f"{path}: {_short(a)} != {_short(b)}")
    return "\n".join(lines[:20])


def _short(entry: tuple[object, ...] | None) -> str:
    if entry is None:
        return "missing"
    kind, mode, uid, gid, mtime, body = entry
    text = body[:20] if isinstance(body, bytes) else body
    return f"({oct(int(kind))}, {oct(int(mode))}, {uid}:{gid}, {mtime}, {text!r})"  # type: ignore[call-overload]


class Changes:
    """Random changes to a tree, reproducible from a seed. ``outside`` is a folder beside
    the tree, for moves into and out of it. Each change is logged, to say what a failing
    round did."""

    def __init__(self, root: Path, outside: Path, seed: int) -> None:
        self.root = root
        self.outside = outside
        self.rng = random.Random(seed)
        self.log: list[str] = []
        self.serial = 0

    # -- picking --------------------------------------------------------------------------

    def _all(self) -> tuple[list[Path], list[Path]]:
        folders, others = [self.root], []
        for folder, dirs, names in os.walk(self.root):
            for name in dirs:  # links to folders are listed among folders: not here
                (others if Path(folder, name).is_symlink() else folders).append(Path(folder, name))
            others += [Path(folder, n) for n in names]
        return folders, others

    def _name(self) -> str:
        self.serial += 1
        return self.rng.choice(["f", "g", "data", "x y", "n\u00e9", "-dash"]) + str(self.serial)

    def _data(self) -> bytes:
        return self.rng.randbytes(self.rng.choice([0, 1, 100, 3000, 70_000]))

    # -- one change -----------------------------------------------------------------------

    def one(self) -> None:
        folders, others = self._all()
        files = [p for p in others if p.is_file() and not p.is_symlink()]
        subfolders = folders[1:]
        choices = [
            (4, lambda: self._create(self.rng.choice(folders))),
            (1, lambda: self._mkdirs(self.rng.choice(folders))),
        ]
        if files:
            choices += [
                (4, lambda: self._write(self.rng.choice(files))),
                (1, lambda: self._same_size(self.rng.choice(files))),
                (1, lambda: self._truncate(self.rng.choice(files))),
                (2, lambda: self._rename(self.rng.choice(files), self.rng.choice(folders))),
                (2, lambda: self._delete(self.rng.choice(files))),
                (1, lambda: self._hard_link(self.rng.choice(files), self.rng.choice(folders))),
                (1, lambda: self._chmod(self.rng.choice(files))),
                (1, lambda: self._touch(self.rng.choice(files))),
                (1, lambda: self._symlink(self.rng.choice(files), self.rng.choice(folders))),
                (1, lambda: self._file_to_folder(self.rng.choice(files))),
            ]
            if ROOT_UID:
                choices.append((1, lambda: self._chown(self.rng.choice(files))))
        if subfolders:
            choices += [
                (1, lambda: self._move_folder(self.rng.choice(subfolders), folders)),
                (1, lambda: self._delete_folder(self.rng.choice(subfolders))),
                (1, lambda: self._chmod(self.rng.choice(subfolders), folder=True)),
                (1, lambda: self._folder_out(self.rng.choice(subfolders))),
                (1, lambda: self._folder_to_link(self.rng.choice(subfolders))),
                (1, lambda: self._replace_folder(self.rng.choice(subfolders))),
            ]
        if any(self.outside.iterdir()):
            choices.append((1, lambda: self._folder_in(self.rng.choice(folders))))
        weights = [w for w, _ in choices]
        self.rng.choices([c for _, c in choices], weights)[0]()

    def _say(self, what: str, *paths: Path) -> None:
        self.log.append(what + " " + " ".join(str(p.relative_to(self.root.parent)) for p in paths))

    def _create(self, folder: Path) -> None:
        path = folder / self._name()
        path.write_bytes(self._data())
        self._say("create", path)

    def _mkdirs(self, folder: Path) -> None:
        # Files made at once in new folders: before the tracker can watch them.
        deep = folder / self._name() / self._name()
        deep.mkdir(parents=True)
        for _ in range(self.rng.randint(0, 3)):
            (deep / self._name()).write_bytes(self._data())
        (deep.parent / self._name()).write_bytes(self._data())
        self._say("mkdirs", deep)

    def _write(self, path: Path) -> None:
        with path.open("ab" if self.rng.random() < 0.3 else "wb") as f:
            f.write(self._data())
        self._say("write", path)

    def _same_size(self, path: Path) -> None:
        size = path.stat().st_size
        with path.open("r+b") as f:
            f.write(self.rng.randbytes(size))
        self._say("rewrite same size", path)

    def _truncate(self, path: Path) -> None:
        os.truncate(path, self.rng.randint(0, path.stat().st_size))
        self._say("truncate", path)

    def _rename(self, path: Path, folder: Path) -> None:
        target = folder / self._name()
        if self.rng.random() < 0.3:
            existing = [p for p in folder.iterdir() if p.is_file() and not p.is_symlink()]
            target = existing[0] if existing else target  # over an existing file
        os.rename(path, target)
        self._say("rename", path, target)

    def _delete(self, path: Path) -> None:
        path.unlink()
        self._say("delete", path)

    def _hard_link(self, path: Path, folder: Path) -> None:
        target = folder / self._name()
        os.link(path, target)
        self._say("hard link", path, target)

    def _chmod(self, path: Path, *, folder: bool = False) -> None:
        mode = self.rng.choice([0o700, 0o755, 0o750] if folder else [0o600, 0o644, 0o640, 0o755])
        path.chmod(mode)
        self._say(f"chmod {oct(mode)}", path)

    def _chown(self, path: Path) -> None:
        uid, gid = self.rng.choice([(0, 0), (1000, 1000), (4242, 77)])
        os.chown(path, uid, gid)
        self._say(f"chown {uid}:{gid}", path)

    def _touch(self, path: Path) -> None:
        when = self.rng.randint(1_000_000_000, 1_700_000_000) * 10**9 + self.rng.randint(0, 10**9)
        os.utime(path, ns=(when, when))
        self._say("set mtime", path)

    def _symlink(self, path: Path, folder: Path) -> None:
        target = folder / self._name()
        os.symlink(os.path.relpath(path, folder), target)
        self._say("symlink", target, path)

    def _file_to_folder(self, path: Path) -> None:
        path.unlink()
        path.mkdir()
        (path / self._name()).write_bytes(self._data())
        self._say("file to folder", path)

    def _move_folder(self, path: Path, folders: list[Path]) -> None:
        targets = [f for f in folders if f != path and path not in f.parents]
        target = self.rng.choice(targets) / self._name()
        os.rename(path, target)
        self._say("move folder", path, target)

    def _delete_folder(self, path: Path) -> None:
        shutil.rmtree(path)
        self._say("delete folder", path)

    def _folder_out(self, path: Path) -> None:
        os.rename(path, self.outside / self._name())
        self._say("folder out of the tree", path)

    def _folder_in(self, folder: Path) -> None:
        source = self.rng.choice(list(self.outside.iterdir()))
        target = folder / self._name()
        os.rename(source, target)
        self._say("folder into the tree", target)

    def _folder_to_link(self, path: Path) -> None:
        shutil.rmtree(path)
        os.symlink(".", path)
        self._say("folder to link", path)

    def _replace_folder(self, path: Path) -> None:
        # Moved away and made again at the same name: the old content must go.
        os.rename(path, self.outside / self._name())
        path.mkdir()
        (path / self._name()).write_bytes(self._data())
        self._say("folder replaced", path)
