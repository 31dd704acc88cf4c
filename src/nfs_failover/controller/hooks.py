"""Running the operator's hooks: argv lists with placeholders, never a shell, a deadline
each. A failing pre-hook stops its workflow."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from nfs_failover.config import Hook
from nfs_failover.errors import NfsFailoverError


class HookFailed(NfsFailoverError):
    """A hook exited non-zero, could not start, or overran its deadline."""


async def run_hook(hook: Hook, values: Mapping[str, str], timeout: float) -> str:
    """Run one hook; returns its last line of output, raises HookFailed."""
    argv = [part.format_map(values) for part in hook.argv]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    except OSError as exc:
        raise HookFailed(f"hook {argv[0]}: cannot start ({exc.strerror})") from exc
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise HookFailed(f"hook {argv[0]}: no result within {timeout:g}s; killed") from None
    lines = out.decode(errors="replace").strip().splitlines()
    last = lines[-1] if lines else ""
    if proc.returncode != 0:
        raise HookFailed(f"hook {argv[0]} exited {proc.returncode}: {last}")
    return last
