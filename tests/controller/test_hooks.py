"""Hooks: real programs, argv with placeholders, a deadline each, never a shell."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from nfs_failover.config import Hook
from nfs_failover.controller.hooks import MAX_OUTPUT, OUTPUT_GRACE, HookFailed, run_hook
from tests.helpers import EXAMPLES

VALUES = {
    "volume": "crr",
    "event": "pre_failover",
    "from_replica": "site1",
    "to_replica": "dest1",
    "from_export": "198.18.1.5:/crr-site1",
    "to_export": "198.18.2.5:/crr-dest1",
}


def test_a_hook_gets_its_placeholders_as_separate_arguments(tmp_path: Path) -> None:
    hook = Hook(argv=("/usr/bin/touch", str(tmp_path / "{volume}-{to_replica}; rm -rf x")))
    asyncio.run(run_hook(hook, VALUES, timeout=5))
    assert (tmp_path / "crr-dest1; rm -rf x").exists()  # one argument, no shell


def test_a_failing_hook_is_reported_with_its_exit_status() -> None:
    with pytest.raises(HookFailed, match="hook /bin/false exited 1"):
        asyncio.run(run_hook(Hook(argv=("/bin/false",)), VALUES, timeout=5))


def test_a_hook_that_leaves_a_child_holding_its_output_still_succeeds() -> None:
    hook = Hook(argv=("/bin/sh", "-c", "sleep 30 & echo started"))
    started = time.monotonic()
    assert asyncio.run(run_hook(hook, VALUES, timeout=10)) == "started"
    assert time.monotonic() - started < OUTPUT_GRACE + 2  # not the child's 30 s


def test_a_hook_with_endless_output_keeps_only_a_bounded_part() -> None:
    hook = Hook(argv=("/bin/sh", "-c", "head -c 50000000 /dev/zero | tr '\\0' x; echo; echo end"))
    last = asyncio.run(run_hook(hook, VALUES, timeout=30))
    assert last == "x" * MAX_OUTPUT  # the first MAX_OUTPUT bytes; the rest was dropped


def test_a_hook_whose_placeholders_do_not_fit_fails_as_a_hook() -> None:
    hook = Hook.model_construct(argv=("/bin/echo", "{volume:d}"))  # as if not validated
    with pytest.raises(HookFailed, match="its arguments do not fit"):
        asyncio.run(run_hook(hook, VALUES, timeout=5))


def test_a_hook_that_overruns_its_deadline_is_killed() -> None:
    started = time.monotonic()
    with pytest.raises(HookFailed, match=r"no result within 0\.5s; killed"):
        asyncio.run(run_hook(Hook(argv=("/bin/sleep", "30")), VALUES, timeout=0.5))
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    ("kind", "leave", "go"), [("pre_failover", "az1", "az2"), ("post_failback", "az2", "az1")]
)
def test_hook_placeholders_name_the_replica_clients_leave_and_the_one_they_go_to(
    tmp_path: Path, kind: str, leave: str, go: str
) -> None:
    from nfs_failover.config import load_config
    from nfs_failover.controller.workflows import WORKFLOWS, Context

    phase, workflow = kind.split("_")  # pre_failover: the failover's pre-hooks step
    step = dict(WORKFLOWS[workflow])[f"{phase}-hooks"]
    config = load_config(EXAMPLES / "local-lab.yaml")
    hook = Hook(argv=("/usr/bin/touch", str(tmp_path / "{event}-{from_replica}-{to_replica}")))
    hooks = config.hooks.model_copy(update={kind: (hook,)})
    config = config.model_copy(update={"hooks": hooks})
    volume = config.volumes[0]
    ctx = Context(config, volume, provider=None, store=None)  # type: ignore[arg-type]
    asyncio.run(step(ctx))
    assert (tmp_path / f"{kind}-{leave}-{go}").exists()
