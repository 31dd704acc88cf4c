"""What only the sqlite store does: a private file, its own errors, and a lease clock the
tests can set."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from nfs_failover.config import StoreUrl
from nfs_failover.store import SqliteStore, StoreError, open_store


def test_the_store_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    SqliteStore(tmp_path / "state.db").close()
    assert stat.S_IMODE((tmp_path / "state.db").stat().st_mode) == 0o600


def test_an_unusable_store_is_a_store_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("")
    with pytest.raises(StoreError, match=r"not-a-dir/state\.db: cannot open the store"):
        SqliteStore(tmp_path / "not-a-dir" / "state.db")


def test_open_store_opens_the_sqlite_file_the_url_names(tmp_path: Path) -> None:
    store = open_store(StoreUrl.parse(f"sqlite://{tmp_path}/state.db"))
    try:
        assert isinstance(store, SqliteStore) and store.path == tmp_path / "state.db"
        assert str(store) == f"sqlite://{tmp_path}/state.db"
    finally:
        store.close()


def test_only_one_controller_holds_the_lease_until_it_expires(tmp_path: Path) -> None:
    one = SqliteStore(tmp_path / "state.db")
    two = SqliteStore(tmp_path / "state.db")  # another controller on the same store
    assert one.acquire_lease("leader", "ctl-a", ttl=10, now=100.0)
    assert not two.acquire_lease("leader", "ctl-b", ttl=10, now=105.0)
    assert one.acquire_lease("leader", "ctl-a", ttl=10, now=108.0)  # renewed to 118
    assert not two.acquire_lease("leader", "ctl-b", ttl=10, now=117.0)
    assert two.acquire_lease("leader", "ctl-b", ttl=10, now=118.5)  # expired: taken over
    assert one.lease_holder("leader", now=119.0) == "ctl-b"
    assert not one.acquire_lease("leader", "ctl-a", ttl=10, now=119.0)
    two.release_lease("leader", "ctl-b")
    assert one.lease_holder("leader", now=119.0) is None


def test_an_existing_store_wider_than_0600_is_narrowed_at_open(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    SqliteStore(path).close()
    path.chmod(0o644)
    store = SqliteStore(path)
    try:
        assert path.stat().st_mode & 0o777 == 0o600
        for side in ("state.db-wal", "state.db-shm"):
            if (tmp_path / side).exists():
                assert (tmp_path / side).stat().st_mode & 0o777 == 0o600
    finally:
        store.close()
