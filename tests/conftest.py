"""Shared fixtures. Lab fixtures build real namespaces and Ganesha zones (tests/helpers.py
says when a lab test skips).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nfs_failover.lab import Lab
from tests.helpers import TEST_LAB_SLOT, TEST_LAB_TAG, fresh_lab, require_lab


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One two-zone lab with two client hosts (the drill's default) and a three-member etcd
    cluster for the whole session, torn down at the end even on failure."""
    require_lab()
    built = fresh_lab(tmp_path_factory.mktemp("lab") / "state", TEST_LAB_TAG, TEST_LAB_SLOT)
    try:
        built.up(clients=2, etcd_members=3)
        yield built
    finally:
        built.down()
