"""What the lease tests share, without the lab: a volume replicated by ANF (the contract
server on loopback), an etcd store, and log lines to wait for.

No NFS server runs here: the exports are loopback addresses nothing answers on, so the
probes fail at once, decisions stay "no action", and only manual actions and resumed
workflows move a volume. ``confirm-writable`` would wait for a write that cannot happen:
``with_stand_in`` replaces it where a workflow must finish (the lab tests cover the real one).
"""

from __future__ import annotations

import logging
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from nfs_failover.config import Config, load_config
from nfs_failover.controller.workflows import WORKFLOWS, Context, StepFn
from nfs_failover.pacing import Deadline
from tests.helpers import TOKEN, free_port
from tests.replication.anf_helpers import make_volume
from tests.store.etcd_server import EtcdServer

EXPORTS = ("127.0.0.1:/crr-site1", "127.0.0.2:/crr-dest1")
WAIT = 60.0  # the bound of every wait for an event


def config_for(
    anf_url: str, etcd: EtcdServer, prefix: str, folder: Path, *, autofs_root: Path | None = None
) -> Config:
    """One controller's config: the volume on the contract server, the shared etcd under
    ``prefix``, and an API (token, socket, a free port) of its own in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    token = folder / "token"
    token.write_text(f"{TOKEN}\n")
    token.chmod(0o600)
    run = folder / "run"
    run.mkdir(mode=0o700, exist_ok=True)
    volume = make_volume(anf_url, EXPORTS)
    raw: dict[str, object] = {
        "volumes": [volume.model_dump(mode="json", exclude_none=True)],
        "policy": {
            "probe_interval": "200ms",
            "probe_timeout": "500ms",
            "failover_after": "1h",
            "recover_after": "1h",
        },
        "store": f"etcd://{etcd.endpoint}",
        "etcd": {"prefix": prefix},
        "api": {
            "listen": f"127.0.0.1:{free_port()}",
            "token_file": str(token),
            "socket": str(run / "api.sock"),
        },
    }
    if autofs_root is not None:
        raw["autofs"] = {"root": str(autofs_root), "pidfile": str(autofs_root / "automount.pid")}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


async def _writable(ctx: Context) -> None:
    ctx.data["confirm_writable"] = "stand-in: no NFS server in this test"


def with_stand_in() -> tuple[tuple[str, StepFn], ...]:
    """The failover's steps with ``confirm-writable`` standing in for an NFS write."""
    return tuple(
        (name, _writable if name == "confirm-writable" else step)
        for name, step in WORKFLOWS["failover"]
    )


class LogEvents(logging.Handler):
    """Every record of the ``nfs_failover`` loggers, kept in order with the monotonic time
    it came; a test waits for a line rather than for time to pass."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[float, str, str]] = []  # (when, logger, message)
        self._changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self._changed:
            self.lines.append((time.monotonic(), record.name, record.getMessage()))
            self._changed.notify_all()

    def wait_for(self, text: str, *, logger: str = "", after: int = 0) -> tuple[int, float]:
        """The index and time of the first line from ``after`` on that contains ``text``
        (from a logger whose name starts with ``logger``); AssertionError after WAIT."""
        deadline = Deadline(WAIT)
        with self._changed:
            while True:
                for index in range(after, len(self.lines)):
                    when, name, message = self.lines[index]
                    if text in message and name.startswith(logger):
                        return index, when
                if deadline.passed():
                    raise AssertionError(f"no log line with {text!r} within {WAIT:g}s")
                self._changed.wait(deadline.left())

    def count(self, start: str, *, logger: str = "") -> int:
        """How many lines start with ``start`` (from a logger named ``logger``...)."""
        with self._changed:
            return sum(m.startswith(start) and n.startswith(logger) for _, n, m in self.lines)


def capture_logs() -> Iterator[LogEvents]:
    handler = LogEvents()
    root = logging.getLogger("nfs_failover")
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


class ProcessLines:
    """A child process's output, line by line, through a queue filled by a thread."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.seen: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def wait_for(self, text: str) -> str:
        deadline = Deadline(WAIT)
        while not deadline.passed():
            try:
                line = self._lines.get(timeout=deadline.left())
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"the process ended without {text!r}:\n" + self.text())
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r} within {WAIT:g}s:\n" + self.text())

    def text(self) -> str:
        return "\n".join(self.seen)
