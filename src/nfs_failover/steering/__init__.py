"""Client steering: the autofs maps nfs-failover owns, and healing of stuck mounts."""
