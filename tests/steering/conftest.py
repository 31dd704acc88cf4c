"""Fixtures of the steering tests: a config with two volumes under ``/misc``."""

from __future__ import annotations

import pytest

from nfs_failover.config import Config, parse_config

CONFIG = """\
volumes:
  - name: crr
    mode: read-write
    replicas:
      - {name: site1, export: "10.1.13.5:/crr-site1"}
      - {name: dest1, export: "10.2.13.5:/crr-dest1"}
    replication: {provider: local, source_path: /srv/az1/crr, destination_path: /srv/az2/crr}
  - name: lab
    mode: read-only
    mount: {map_key: data}
    replicas:
      - {name: az1, export: "nfs1.example.com:/srv/az1/vol"}
      - {name: az2, export: "[fd00::5]:/srv/az2/vol"}
    replication: {provider: local, source_path: /srv/az1/vol, destination_path: /srv/az2/vol}
autofs: {mount_root: /misc}
"""


@pytest.fixture
def config() -> Config:
    """``crr`` (read-write, site1 then dest1) and ``lab`` (read-only, key ``data``)."""
    return parse_config(CONFIG, "test.yaml")
