"""A controller process for the lease tests: ``nfs-failover ARGS``, with the ANF provider
reaching the contract server (its CA, a fixed token: ``LEASE_TEST_ANF`` is "URL CA_PATH")
and ``confirm-writable`` standing in for an NFS write (no NFS server runs there).

Run from the checkout: ``python -m tests.controller.lease_child controller --config F``.
"""

from __future__ import annotations

import os
from pathlib import Path

from nfs_failover import cli
from nfs_failover.config import Volume
from nfs_failover.controller import loop, workflows
from nfs_failover.replication import Provider
from nfs_failover.replication.anf import AnfProvider
from tests.controller.lease_helpers import with_stand_in
from tests.replication.anf_helpers import sdk_client

ENV = "LEASE_TEST_ANF"


def _provider(volume: Volume) -> Provider:
    url, ca = os.environ[ENV].split(" ", 1)
    return AnfProvider(volume, client=sdk_client(url, Path(ca)), polling_interval=0)


if __name__ == "__main__":
    loop.open_provider = _provider  # type: ignore[assignment]
    workflows.WORKFLOWS["failover"] = with_stand_in()
    cli.main()
