"""The ANF volume the provider tests configure, and the real SDK's client for the contract
server: the tests use them, and so does the child process one test starts."""

from __future__ import annotations

from pathlib import Path

from azure.mgmt.netapp import NetAppManagementClient

from nfs_failover.config import Volume
from tests.replication.anf_contract_server import SUBSCRIPTION, StaticTokenCredential, volume_id

SOURCE_VOLUME = "vol-site1"
DESTINATION_VOLUME = "vol-dest1"

# The seed's addresses, for configuration only: no test reaches them (divergence, the one
# operation that talks NFS, is tested against the lab's exports).
SEED_EXPORTS = ("10.1.13.5:/crr-site1", "10.2.13.5:/crr-dest1")


def make_volume(endpoint: str, exports: tuple[str, str] = SEED_EXPORTS) -> Volume:
    return Volume.model_validate(
        {
            "name": "crr",
            "mode": "read-write",
            "replicas": [
                {"name": "site1", "export": exports[0]},
                {"name": "dest1", "export": exports[1]},
            ],
            "replication": {
                "provider": "anf",
                "source": volume_id(SOURCE_VOLUME),
                "destination": volume_id(DESTINATION_VOLUME),
                "management_endpoint": endpoint,
            },
        }
    )


def sdk_client(base_url: str, ca_path: Path) -> NetAppManagementClient:
    return NetAppManagementClient(
        StaticTokenCredential(),
        SUBSCRIPTION,
        base_url=base_url,
        credential_scopes=[f"{base_url}/.default"],
        connection_verify=str(ca_path),
    )
