"""nfs-failover: automatic, guarded failover between replicated NFS volumes."""

__version__ = "0.1.0"
