"""Allow ``python -m nfs_failover``."""

from nfs_failover.cli import main

main()
