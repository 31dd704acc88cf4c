"""How long a desired-state change takes from ``set_desired`` to the watch of another store
object, for sqlite and for etcd.

One writer and one watcher on the same store; the writer changes one volume's desired
state N times, each after the watcher delivered the one before, and the time from the
start of ``set_desired`` to the watcher's snapshot is taken. sqlite's watch polls every
0.1 s; each change here comes just after the watcher's last look, so its figures sit near
that bound. etcd's is a real watch. etcd is Debian's /usr/bin/etcd, started here on a free
loopback port in a temporary folder (the test suite's helper, short raft ticks).

Run after scripts/setup:  .venv/bin/python bench/store_watch.py [--changes 200]
"""

from __future__ import annotations

import argparse
import queue
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.store.etcd_server import EtcdServer

from nfs_failover.config import EtcdSettings
from nfs_failover.desired import VolumeDesired
from nfs_failover.store import EtcdStore, SqliteStore, Store


def measure(writer: Store, watcher: Store, changes: int) -> list[float]:
    seen: queue.Queue[tuple[float, dict[str, VolumeDesired]]] = queue.Queue()
    stop = threading.Event()

    def follow() -> None:
        for snapshot in watcher.watch_desired(stop):
            seen.put((time.perf_counter(), snapshot))

    threading.Thread(target=follow, daemon=True).start()
    seen.get(timeout=30)  # the first snapshot: the state before any change
    delays = []
    try:
        for generation in range(changes):
            desired = VolumeDesired("crr", (f"r{generation}",), f"r{generation}", (), generation)
            expected = None if generation == 0 else generation - 1
            started = time.perf_counter()
            assert writer.set_desired(desired, expected_generation=expected)
            while True:
                at, snapshot = seen.get(timeout=30)
                if snapshot.get("crr") == desired:
                    delays.append(at - started)
                    break
    finally:
        stop.set()
    return delays


def show(name: str, delays: list[float]) -> None:
    cuts = statistics.quantiles(delays, n=100)
    print(
        f"{name:7s} n={len(delays)}  p50 {cuts[49] * 1000:7.2f} ms  p99 {cuts[98] * 1000:7.2f} ms"
        f"  max {max(delays) * 1000:7.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--changes", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        sqlite_path = Path(folder) / "state.db"
        writer, watcher = SqliteStore(sqlite_path), SqliteStore(sqlite_path)
        show("sqlite", measure(writer, watcher, args.changes))
        writer.close()
        watcher.close()

        server = EtcdServer(Path(folder) / "etcd")
        server.start()
        try:
            settings = EtcdSettings(prefix="/bench/")
            writer = EtcdStore([server.endpoint], settings=settings)
            watcher = EtcdStore([server.endpoint], settings=settings)
            show("etcd", measure(writer, watcher, args.changes))
            writer.close()
            watcher.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
