"""Running the operator's hooks: argv lists with placeholders, never a shell, a deadline
each. A failing pre-hook stops its workflow.

Whatever goes wrong with a hook is a ``HookFailed``: it cannot start, exits non-zero,
overruns its deadline, or its placeholders do not fit. Its output is read up to
``MAX_OUTPUT`` bytes (the rest is drained and dropped), and once it has exited its output
is not waited for past ``OUTPUT_GRACE``: a background child it left behind may hold the
pipe open for ever, and is killed then (a hook runs in a process group of its own; a
daemon it starts properly, in a session of its own with its output elsewhere, is not
touched).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping

from nfs_failover.config import Hook
from nfs_failover.errors import NfsFailoverError

MAX_OUTPUT = 64 * 1024
OUTPUT_GRACE = 1.0  # seconds of output still read after the hook exited
REAP_WAIT = 5.0  # seconds to wait for a hook killed at its deadline


class HookFailed(NfsFailoverError):
    """A hook exited non-zero, could not start, overran its deadline, or did not fit."""


async def run_hook(hook: Hook, values: Mapping[str, str], timeout: float) -> str:
    """Run one hook; returns its last line of output, raises HookFailed."""
    try:
        argv = [part.format_map(values) for part in hook.argv]
    except (KeyError, ValueError, IndexError, AttributeError) as exc:
        raise HookFailed(f"hook {hook.argv[0]}: its arguments do not fit ({exc})") from None
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        raise HookFailed(f"hook {argv[0]}: cannot start ({exc.strerror or exc})") from None
    assert proc.stdout is not None
    output = bytearray()
    reader = asyncio.ensure_future(_read_bounded(proc.stdout, output))
    try:
        if not await _exited(proc, timeout):
            _kill_group(proc.pid)
            await _exited(proc, REAP_WAIT)
            raise HookFailed(f"hook {argv[0]}: no result within {timeout:g}s; killed")
    finally:
        with contextlib.suppress(TimeoutError, OSError):
            await asyncio.wait_for(asyncio.shield(reader), OUTPUT_GRACE)
        if not reader.done():  # what it left behind still holds the pipe: end it
            _kill_group(proc.pid)
            with contextlib.suppress(TimeoutError, OSError):
                await asyncio.wait_for(reader, REAP_WAIT)
        reader.cancel()
    lines = output.decode(errors="replace").strip().splitlines()
    last = lines[-1] if lines else ""
    if proc.returncode != 0:
        raise HookFailed(f"hook {argv[0]} exited {proc.returncode}: {last}")
    return last


async def _exited(proc: asyncio.subprocess.Process, timeout: float) -> bool:
    """Whether the hook exited within ``timeout``. Not ``proc.wait()``: asyncio answers it
    only once the pipes are closed too, which a child the hook left behind may never do."""
    deadline = asyncio.get_running_loop().time() + timeout
    while proc.returncode is None:
        if asyncio.get_running_loop().time() >= deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def _read_bounded(stream: asyncio.StreamReader, into: bytearray) -> None:
    while chunk := await stream.read(65536):
        if len(into) < MAX_OUTPUT:
            into += chunk[: MAX_OUTPUT - len(into)]


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
