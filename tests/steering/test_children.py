"""Bounded children: read whole while they run, killed and abandoned at their deadline,
and reaped once they have ended."""

from __future__ import annotations

import sys
import time

from nfs_failover.steering.children import ChildRunner


def test_a_child_with_much_to_say_is_read_while_it_runs() -> None:
    argv = [sys.executable, "-c", "import sys; sys.stdout.write('x' * 1_000_000)"]

    ran = ChildRunner().run(argv, 30.0)

    assert (ran.returncode, len(ran.stdout)) == (0, 1_000_000)


def test_a_child_past_its_deadline_is_abandoned_and_reaped_once_it_ended() -> None:
    runner = ChildRunner()
    started = time.monotonic()

    ran = runner.run(["sleep", "60"], 0.2, ("/misc/crr", 40))

    assert time.monotonic() - started < 1.0
    assert (ran.returncode, ran.stdout, ran.stderr) == (None, "", "")
    assert runner.abandoned_count() == 1
    stuck = runner.stuck(("/misc/crr", 40))
    assert stuck is not None and stuck[0] == ran.pid
    assert runner.stuck(("/misc/crr", 41)) is None
    # SIGKILL ends a sleep at once: the reaper collects it, and the mount is free again.
    deadline = time.monotonic() + 5.0
    reaped: list[int] = []
    while not reaped and time.monotonic() < deadline:
        reaped = runner.reap()
    assert reaped == [ran.pid]
    assert runner.abandoned_count() == 0
    assert runner.stuck(("/misc/crr", 40)) is None
