"""Controller tests use the replication tests' lab and volume fixtures."""

from tests.replication.fixtures import provider, replication_lab, volume  # noqa: F401
