"""Controller tests use the replication tests' lab and volume fixtures."""

from tests.replication.conftest import provider, replication_lab, volume  # noqa: F401
