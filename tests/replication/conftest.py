"""Replication tests on a lab of their own: they flip exports between read-only and
read-write, which the shared lab's tests must not see. Each test gets the lab's volume
with empty folders, a fresh relationship state and the normal access."""

from tests.replication.fixtures import provider, replication_lab, volume  # noqa: F401
