"""A lab of its own for replication tests: they flip exports between read-only and
read-write, which the shared lab's tests must not see."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nfs_failover.lab import Lab
from tests.conftest import fresh_lab, require_lab


@pytest.fixture(scope="session")
def replication_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    require_lab()
    built = fresh_lab(tmp_path_factory.mktemp("rlab") / "state", tag="r", slot=42)
    try:
        built.up()
        yield built
    finally:
        built.down()
