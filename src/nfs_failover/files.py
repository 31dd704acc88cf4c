"""Files: written so that a crash never leaves half of one, and read from users without
hanging or swallowing the memory: the one way this project does each."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


def read_regular(path: Path, limit: int) -> bytes:
    """At most ``limit`` bytes of ``path``, which must be a regular file: a FIFO, a device
    (``/dev/zero``) or a folder is refused (OSError "not a regular file") without reading,
    and opening never blocks."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise OSError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        chunks, left = [], limit
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_atomically(path: Path, text: str, *, mode: int, durable: bool = True) -> bool:
    """Temporary file, fsync, rename, fsync of the folder; False when the content was
    already ``text`` (nothing written). The file gets exactly ``mode``. Raises OSError.

    ``durable=False`` leaves out both fsyncs: readers never see half a file, but after a
    machine crash the file may hold an older content (or none)."""
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.nfs-failover.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fchmod(handle.fileno(), mode)  # not widened or narrowed by the umask
        if durable:
            os.fsync(handle.fileno())
    os.replace(tmp, path)
    if not durable:
        return True
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    return True
