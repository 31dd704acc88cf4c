"""The controller: turns endpoint health and replication status into guarded actions."""
