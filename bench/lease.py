"""How quickly a controller that loses its leader lease stops its workflow, how long before
the store could grant the lease to another that is, and how long a standby takes over
after the leader is killed.

Lost: a controller in this process runs a failover (ANF's contract server on loopback)
that sits in confirm-writable (no NFS server answers); then another holder writes the
lease key, or etcd is stopped (SIGSTOP). Figures: from that moment to the workflow's
cancellation, and from the cancellation to the earliest end of the lease in the store
(when the last renewal was sent, plus the ttl). Takeover: two ``nfs-failover controller``
processes (the tests' child, the provider on the contract server); the leader is killed
with SIGKILL while idle, and the figure is the time until the standby says it holds the
lease. Probe interval 200 ms, so the ttl is 5 s and the margin 1 s.

Run after scripts/setup:  .venv/bin/python bench/lease.py [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trustme
from tests.controller.lease_child import ENV
from tests.controller.lease_helpers import LogEvents, ProcessLines, capture_logs, config_for
from tests.replication.anf_contract_server import ContractServer, contract_server, volume_id
from tests.replication.anf_helpers import DESTINATION_VOLUME, SOURCE_VOLUME, sdk_client
from tests.store.etcd_server import EtcdServer

from nfs_failover.controller.loop import LEASE, Controller
from nfs_failover.replication.anf import AnfProvider
from nfs_failover.store import EtcdStore, Event

REPO = Path(__file__).resolve().parent.parent


class Seen(EtcdStore):
    def __init__(self, etcd: EtcdServer, prefix: str) -> None:
        super().__init__([etcd.endpoint], settings=etcd.settings(prefix), timeout=1.0)
        self.reached = threading.Event()

    def append(self, event: Event) -> int:
        entry = super().append(event)
        if (event.step, event.phase) == ("confirm-writable", "before"):
            self.reached.set()
        return entry


def anf_server(folder: Path) -> contextlib.AbstractContextManager[ContractServer]:
    authority = trustme.CA()
    ca_path = folder / f"ca-{uuid.uuid4().hex[:6]}.pem"
    authority.cert_pem.write_to_path(str(ca_path))
    return contract_server(
        authority, ca_path, volume_id(SOURCE_VOLUME), volume_id(DESTINATION_VOLUME)
    )


def lose(etcd: EtcdServer, folder: Path, logs: LogEvents, how: str) -> tuple[float, float]:
    """One lost lease: (seconds to the cancellation, seconds it came before the ttl end)."""
    prefix = f"/bench-{uuid.uuid4().hex[:12]}/"
    with anf_server(folder) as anf:
        config = config_for(anf.url, etcd, prefix, folder / prefix.strip("/"))
        store = Seen(etcd, prefix)
        provider = AnfProvider(
            config.volumes[0], client=sdk_client(anf.url, anf.ca_path), polling_interval=0
        )
        ctl = Controller(config, store, name="bench", providers={"crr": provider}, step_timeout=60)

        async def main() -> tuple[float, float]:
            stop = asyncio.Event()
            running = asyncio.create_task(ctl.run(stop))
            mark = len(logs.lines)
            await asyncio.to_thread(logs.wait_for, "bench holds the lease", after=mark)
            failover = asyncio.create_task(ctl.request("failover", "crr"))
            assert await asyncio.to_thread(store.reached.wait, 60)
            mark = len(logs.lines)
            assert etcd.process is not None
            lost = time.monotonic()
            if how == "key-taken":
                key = base64.b64encode(f"{prefix}leases/{LEASE}".encode()).decode()
                etcd.post("/v3/kv/put", {"key": key, "value": base64.b64encode(b"x").decode()})
            else:
                os.kill(etcd.process.pid, signal.SIGSTOP)
            try:
                _, cancelled = await asyncio.to_thread(
                    logs.wait_for, "failover:crr cancelled", after=mark
                )
            finally:
                if how != "key-taken":
                    os.kill(etcd.process.pid, signal.SIGCONT)
            stop.set()
            await asyncio.gather(running, failover, return_exceptions=True)
            await ctl.close()
            expires = ctl.keeper.lease.expires
            assert expires is not None
            return cancelled - lost, expires - cancelled

        return asyncio.run(main())


def takeover(etcd: EtcdServer, folder: Path) -> float:
    """Seconds from SIGKILL of the leader process to the standby holding the lease."""
    prefix = f"/bench-{uuid.uuid4().hex[:12]}/"
    with anf_server(folder) as anf:
        env = {**os.environ, ENV: f"{anf.url} {anf.ca_path}"}
        children = []
        for name in ("a", "b"):
            config_for(anf.url, etcd, prefix, folder / prefix.strip("/") / name)
            path = folder / prefix.strip("/") / name / "config.yaml"
            argv = [sys.executable, "-m", "tests.controller.lease_child", "controller"]
            process = subprocess.Popen(
                [*argv, "--config", str(path)],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            children.append(ProcessLines(process))
            children[-1].wait_for(" holds the lease" if name == "a" else "crr: standby: ")
        leader, standby = children
        try:
            killed = time.monotonic()
            leader.process.kill()
            standby.wait_for(f":{standby.process.pid} holds the lease")
            return time.monotonic() - killed
        finally:
            for child in children:
                if child.process.poll() is None:
                    child.process.terminate()
                child.process.wait(30)


def show(label: str, values: list[float]) -> None:
    print(
        f"{label:<46} median {statistics.median(values):6.2f} s"
        f"   min {min(values):6.2f}   max {max(values):6.2f}   (n={len(values)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-lease-") as tmp:
        folder = Path(tmp)
        etcd = EtcdServer(folder / "etcd")
        etcd.start()
        try:
            logs_gen = capture_logs()
            logs = next(logs_gen)
            for how in ("key-taken", "etcd-stopped"):
                runs = [lose(etcd, folder, logs, how) for _ in range(args.runs)]
                show(f"{how}: lost -> workflow cancelled", [r[0] for r in runs])
                show(f"{how}: cancelled before the ttl end", [r[1] for r in runs])
            logs_gen.close()
            show(
                "kill -9 of the leader -> standby holds lease",
                [takeover(etcd, folder) for _ in range(args.runs)],
            )
        finally:
            etcd.stop()


if __name__ == "__main__":
    main()
