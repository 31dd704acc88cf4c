"""The two-zone lab: NFS-Ganesha zones in network namespaces, outages with nftables.

Everything the lab makes lives in namespaces and addresses it created itself
(198.18.0.0/15) and in its own state folder, so ``down`` can remove all of it.
"""

from nfs_failover.lab.lab import Lab, LabStatus, ZoneStatus, default_state_dir

__all__ = ["Lab", "LabStatus", "ZoneStatus", "default_state_dir"]
