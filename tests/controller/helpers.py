"""What the controller's lab tests share: a config of the replication lab's volume with its
own store and policy, and the quick policy of the loop's tests."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from nfs_failover.config import Config, StoreUrl, Volume, load_config
from nfs_failover.lab import Lab

# Probes every 0.2 s and a grace of 2 s: an outage of a few seconds fails over.
FAST = {
    "probe_interval": timedelta(milliseconds=200),
    "probe_timeout": timedelta(milliseconds=500),
    "failover_after": timedelta(seconds=2),
    "recover_after": timedelta(seconds=1),
}


def config_for(lab: Lab, volume: Volume, tmp_path: Path, **policy: object) -> Config:
    """The lab's config with ``volume`` alone, its policy changed by ``policy``, and a store
    in ``tmp_path``."""
    config = load_config(lab.config_path)
    if policy:
        volume = volume.model_copy(update={"policy": volume.policy.model_copy(update=policy)})
    store = StoreUrl.parse(f"sqlite://{tmp_path / 'state.db'}")
    return config.model_copy(update={"volumes": (volume,), "store": store})
