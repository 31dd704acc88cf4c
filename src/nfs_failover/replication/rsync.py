"""rsync as the local engine runs it: a whole tree, or only the paths it is given.

Both forms copy with the same options, so a listed transfer leaves on the destination
exactly what a walk of the whole tree would have left for those paths. rsync's quick
check compares size and modification time to the nanosecond (``--modify-window=-1``):
at rsync's default of whole seconds, a rewrite of the same size within the second would
not be copied, and folder times set in the same second as a change inside would stay
off. Every run has the caller's deadline; a run past it is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nfs_failover.errors import ProviderError, ProviderTimeout
from nfs_failover.pacing import Deadline
from nfs_failover.replication.base import Progress

COMMON = (
    "rsync",
    "-a",
    "--inplace",
    "--numeric-ids",
    "--modify-window=-1",
    "--stats",
    "--out-format=%i %n",
)
# The whole tree: what is not on the source goes from the destination.
WHOLE = (*COMMON, "--delete")
# Only the listed paths (NUL-separated on stdin, relative to the source). A listed path
# missing on the source is deleted on the destination (folders too: --force); listed
# folders carry their own attributes, not their contents (-a does not imply -r here).
LISTED = (*COMMON, "--from0", "--files-from=-", "--delete-missing-args", "--force")
# 24: some source files vanished while rsync ran. Their removal is a change of its own,
# which the next transfer carries; the rest of this one is complete.
VANISHED = 24
PROGRESS_EVERY = 1.0  # seconds between progress reports of a running transfer


@dataclass(frozen=True)
class Copied:
    """What one rsync run did: files and links it wrote, paths it deleted, bytes sent."""

    changed: tuple[str, ...]
    deleted: tuple[str, ...]
    sent: int


async def run(
    source: Path,
    destination: Path,
    deadline: Deadline,
    *,
    paths: Sequence[str] | None = None,
    progress: Progress | None = None,
    started: Callable[[int], None] | None = None,
) -> Copied:
    """Copy ``source`` to ``destination``: the whole tree, or only ``paths`` (relative,
    ``.`` for the folder itself). Raises ProviderTimeout past the deadline (rsync is
    killed), ProviderError when rsync fails.

    Its itemized output is read as it comes, so a long transfer reports progress.
    """
    destination.mkdir(parents=True, exist_ok=True)
    argv = WHOLE if paths is None else LISTED
    proc = await asyncio.create_subprocess_exec(
        *argv,
        f"{source}/",
        f"{destination}/",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL if paths is None else asyncio.subprocess.PIPE,
        limit=1 << 20,
    )
    if started is not None:
        started(proc.pid)
    listing = b"".join(os.fsencode(p) + b"\0" for p in paths) if paths is not None else None
    try:
        out, err = await asyncio.wait_for(_collect(proc, listing, progress), deadline.left())
    except (TimeoutError, asyncio.CancelledError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise ProviderTimeout(
            "rsync did not finish within the deadline; the transfer is incomplete and the "
            "next one completes it"
        ) from None
    if proc.returncode not in (0, VANISHED):
        reason = err.decode(errors="replace").strip().splitlines()
        raise ProviderError(
            f"rsync failed with exit status {proc.returncode}",
            code=f"rsync-{proc.returncode}",
            provider_message=reason[-1] if reason else "",
        )
    return parse(out.decode(errors="surrogateescape"))


async def _collect(
    proc: asyncio.subprocess.Process, listing: bytes | None, progress: Progress | None
) -> tuple[bytes, bytes]:
    assert proc.stdout is not None and proc.stderr is not None
    errors = asyncio.ensure_future(proc.stderr.read())
    feeding = asyncio.ensure_future(_feed(proc, listing))
    lines: list[bytes] = []
    reported = time.monotonic()
    try:
        async for line in proc.stdout:
            lines.append(line)
            if progress is not None and time.monotonic() - reported >= PROGRESS_EVERY:
                reported = time.monotonic()
                progress(f"transferring: {len(lines)} files so far", None)
        await proc.wait()
        await feeding
        return b"".join(lines), await errors
    finally:
        feeding.cancel()
        errors.cancel()


async def _feed(proc: asyncio.subprocess.Process, listing: bytes | None) -> None:
    """The list of paths on rsync's stdin, written while its output is read (a long list
    would otherwise fill both pipes and stop both sides)."""
    if listing is None or proc.stdin is None:
        return
    # rsync that failed early has closed its stdin: its exit status says why.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        proc.stdin.write(listing)
        await proc.stdin.drain()
        proc.stdin.close()
        await proc.stdin.wait_closed()


_STAT_SENT = re.compile(r"^Total transferred file size: ([\d,]+) bytes", re.MULTILINE)


def parse(output: str) -> Copied:
    changed: list[str] = []
    deleted: list[str] = []
    for line in output.splitlines():
        code, _, name = line.partition(" ")
        if code == "*deleting":
            deleted.append(_unescape(name.strip()))
        elif len(code) == 11 and code[1] in "fL":
            changed.append(_unescape(name))
    match = _STAT_SENT.search(output)
    sent = int(match.group(1).replace(",", "")) if match else 0
    return Copied(tuple(changed), tuple(deleted), sent)


def _unescape(name: str) -> str:
    """rsync prints unprintable bytes of names as \\#ooo."""
    return re.sub(r"\\#([0-7]{3})", lambda m: chr(int(m.group(1), 8)), name)
