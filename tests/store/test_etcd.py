"""What only the etcd store does: members that fail, a watch that outlives its stream and
its history, TLS from the config's files alone, and prefixes that keep installations apart."""

from __future__ import annotations

import base64
import queue
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nfs_failover.config import EtcdSettings, EtcdTls, HostPort, StoreUrl
from nfs_failover.desired import VolumeDesired
from nfs_failover.store import EtcdStore, Store, StoreError, open_store
from nfs_failover.store.etcd_watch import DesiredWatch
from tests.helpers import free_port
from tests.store.etcd_server import EtcdServer, TlsFiles

NORMAL = VolumeDesired("crr", offered=("site1",), active="site1", generation=0)
FAILED_OVER = VolumeDesired("crr", ("dest1",), "dest1", fenced=("site1",), generation=1)
WAIT = 30.0


def etcd(server: EtcdServer, prefix: str, *, timeout: float = 5.0) -> EtcdStore:
    return EtcdStore([server.endpoint], settings=server.settings(prefix), timeout=timeout)


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[EtcdServer]:
    """A server of this test alone: it is restarted and compacted."""
    server = EtcdServer(tmp_path / "etcd")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that takes connections (the kernel's backlog) and never answers: a member
    that hangs, as a stopped process does."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield int(listener.getsockname()[1])


def follow(store: Store) -> tuple[queue.Queue[dict[str, VolumeDesired]], threading.Event]:
    seen: queue.Queue[dict[str, VolumeDesired]] = queue.Queue()
    stop = threading.Event()

    def run() -> None:
        for snapshot in store.watch_desired(stop):
            seen.put(snapshot)

    threading.Thread(target=run, daemon=True).start()
    return seen, stop


def test_open_store_opens_etcd_with_the_config_s_prefix(
    etcd_server: EtcdServer, prefix: str
) -> None:
    url = StoreUrl.parse(f"etcd://{etcd_server.endpoint}")
    store = open_store(url, etcd=EtcdSettings(prefix=prefix))
    try:
        assert isinstance(store, EtcdStore) and store.prefix == prefix
        assert store.set_desired(NORMAL, expected_generation=None)
        assert str(store) == f"etcd://{etcd_server.endpoint} (prefix {prefix})"
    finally:
        store.close()


def test_installations_under_different_prefixes_see_nothing_of_each_other(
    etcd_server: EtcdServer, prefix: str
) -> None:
    one, two = etcd(etcd_server, prefix), etcd(etcd_server, prefix + "other/")
    one.set_desired(NORMAL, expected_generation=None)
    assert two.all_desired() == {} and two.get_desired("crr") is None
    assert one.acquire_lease("controller", "ctl-a", ttl=30)
    assert two.acquire_lease("controller", "ctl-b", ttl=30)


def test_an_unreadable_record_is_never_overwritten_by_a_guess(
    etcd_server: EtcdServer, prefix: str
) -> None:
    store = etcd(etcd_server, prefix)
    store.set_desired(NORMAL, expected_generation=None)
    etcd_server.post(
        "/v3/kv/put",
        {"key": _b64(f"{prefix}desired/crr"), "value": _b64('{"generation": 0')},
    )
    assert not store.set_desired(FAILED_OVER, expected_generation=0)


def test_a_member_list_whose_first_member_is_dead_works(
    etcd_server: EtcdServer, prefix: str
) -> None:
    dead = HostPort("127.0.0.1", free_port())
    store = EtcdStore([dead, etcd_server.endpoint], settings=EtcdSettings(prefix=prefix))
    assert store.set_desired(NORMAL, expected_generation=None)
    assert store.get_desired("crr") == NORMAL
    assert store.acquire_lease("controller", "ctl-a", ttl=30)
    seen, stop = follow(store)
    try:
        assert seen.get(timeout=WAIT) == {"crr": NORMAL}
    finally:
        stop.set()


def test_an_unreachable_store_raises_a_store_error_naming_the_members() -> None:
    closed = HostPort("127.0.0.1", free_port())
    store = EtcdStore([closed], timeout=1.0)
    with pytest.raises(StoreError, match=rf"etcd://{closed}: no member answered.*cannot connect"):
        store.get_desired("crr")
    with pytest.raises(StoreError, match="no member answered"):
        store.set_desired(NORMAL, expected_generation=None)


def test_a_member_that_never_answers_costs_one_deadline_and_a_write_may_have_happened(
    silent_port: int,
) -> None:
    store = EtcdStore([HostPort("127.0.0.1", silent_port)], timeout=0.5)
    outcome: queue.Queue[BaseException | None] = queue.Queue()

    def read_then_write() -> None:
        try:
            with pytest.raises(StoreError, match="no member answered"):
                store.get_desired("crr")
            with pytest.raises(StoreError, match="may have taken effect"):
                store.set_desired(NORMAL, expected_generation=None)
            outcome.put(None)
        except BaseException as exc:  # handed to the test's thread
            outcome.put(exc)

    threading.Thread(target=read_then_write, daemon=True).start()
    failure = outcome.get(timeout=WAIT)  # a hang would end here, not in the call
    assert failure is None, failure


def test_the_watch_resumes_after_the_server_restarts(own_server: EtcdServer, prefix: str) -> None:
    writer = etcd(own_server, prefix)
    writer.set_desired(NORMAL, expected_generation=None)
    seen, stop = follow(etcd(own_server, prefix))
    try:
        assert seen.get(timeout=WAIT) == {"crr": NORMAL}
        own_server.restart()
        assert writer.set_desired(FAILED_OVER, expected_generation=0)
        assert seen.get(timeout=WAIT) == {"crr": FAILED_OVER}
    finally:
        stop.set()


def test_a_watch_whose_revision_was_compacted_reads_everything_again(
    own_server: EtcdServer, prefix: str
) -> None:
    writer, watcher = etcd(own_server, prefix), etcd(own_server, prefix)
    writer.set_desired(NORMAL, expected_generation=None)
    reads = 0

    def read_then_change_and_compact() -> tuple[dict[str, VolumeDesired], int]:
        # The first read's revision is made stale before the watch opens from it.
        nonlocal reads
        reads += 1
        snapshot, revision = watcher._all_desired()
        if reads == 1:
            writer.set_desired(FAILED_OVER, expected_generation=0)
            writer.set_desired(VolumeDesired("lab", ("az1",), "az1"), expected_generation=None)
            own_server.compact()
        return snapshot, revision

    stop = threading.Event()
    watch = DesiredWatch(watcher.gateway, prefix + "desired/", read_then_change_and_compact)
    snapshots = watch(stop)
    try:
        assert next(snapshots) == {"crr": NORMAL}
        assert next(snapshots) == {"crr": FAILED_OVER, "lab": VolumeDesired("lab", ("az1",), "az1")}
        assert reads == 2
    finally:
        stop.set()
        snapshots.close()


def test_a_watch_drops_events_it_has_seen_already(etcd_server: EtcdServer, prefix: str) -> None:
    writer, watcher = etcd(etcd_server, prefix), etcd(etcd_server, prefix)
    writer.set_desired(NORMAL, expected_generation=None)
    writer.set_desired(FAILED_OVER, expected_generation=0)

    def read_from_the_past() -> tuple[dict[str, VolumeDesired], int]:
        # A snapshot newer than its revision says: the replayed events must not undo it.
        snapshot, revision = watcher._all_desired()
        return snapshot, revision - 1

    stop = threading.Event()
    snapshots = DesiredWatch(watcher.gateway, prefix + "desired/", read_from_the_past)(stop)
    try:
        assert next(snapshots) == {"crr": FAILED_OVER}
        writer.set_desired(VolumeDesired("lab", ("az1",), "az1"), expected_generation=None)
        assert next(snapshots) == {"crr": FAILED_OVER, "lab": VolumeDesired("lab", ("az1",), "az1")}
    finally:
        stop.set()
        snapshots.close()


def test_the_lease_s_renewal_says_false_once_the_key_is_gone(
    etcd_server: EtcdServer, prefix: str
) -> None:
    store = etcd(etcd_server, prefix)
    assert store.acquire_lease("controller", "ctl-a", ttl=30)
    etcd_server.post("/v3/kv/deleterange", {"key": _b64(f"{prefix}leases/controller")})
    assert not EtcdStore([etcd_server.endpoint], settings=EtcdSettings(prefix=prefix)).lease_holder(
        "controller"
    )
    # Its etcd lease is still alive, but the key no longer names it: not the leader. It
    # takes the free key again under a fresh lease.
    assert store.acquire_lease("controller", "ctl-a", ttl=30)
    assert store.lease_holder("controller") == "ctl-a"


def test_tls_trusts_the_config_s_ca_alone_and_no_environment_variable(
    etcd_tls_server: EtcdServer, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert etcd_tls_server.tls is not None
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "no-such-bundle.pem"))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(tmp_path / "no-such-bundle.pem"))
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{free_port()}")
    store = etcd(etcd_tls_server, prefix)
    assert store.set_desired(NORMAL, expected_generation=None)

    other_ca = TlsFiles.make(tmp_path / "other")
    wrong = EtcdStore(
        [etcd_tls_server.endpoint],
        settings=EtcdSettings(
            prefix=prefix,
            tls=EtcdTls(
                ca_file=other_ca.ca,
                cert_file=etcd_tls_server.tls.client_cert,
                key_file=etcd_tls_server.tls.client_key,
            ),
        ),
        timeout=2.0,
    )
    with pytest.raises(StoreError, match="TLS failed"):
        wrong.get_desired("crr")


def test_a_client_without_a_certificate_is_refused_by_a_member_that_asks_for_one(
    etcd_tls_server: EtcdServer, prefix: str
) -> None:
    assert etcd_tls_server.tls is not None
    anonymous = EtcdStore(
        [etcd_tls_server.endpoint],
        settings=EtcdSettings(prefix=prefix, tls=EtcdTls(ca_file=etcd_tls_server.tls.ca)),
        timeout=2.0,
    )
    with pytest.raises(StoreError):
        anonymous.get_desired("crr")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
