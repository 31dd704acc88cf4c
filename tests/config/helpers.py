"""Config texts the tests of the config package start from: one valid volume, and a full file."""

from __future__ import annotations

ANF_SOURCE = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-crr/providers"
    "/Microsoft.NetApp/netAppAccounts/anf-az01/capacityPools/pool1/volumes/crr-site1"
)
ANF_DESTINATION = ANF_SOURCE.replace("az01", "az02").replace("crr-site1", "crr-dest1")

# One valid volume; the table in test_problems.py breaks it one way at a time.
VALID = """\
volumes:
  - name: crr
    mode: read-write
    replicas:
      - {name: site1, export: "10.1.13.5:/crr-site1", zone: AZ01}
      - {name: dest1, export: "10.2.13.5:/crr-dest1", zone: AZ02}
    replication: {provider: local, source_path: /srv/az1/vol, destination_path: /srv/az2/vol}
"""

# Two valid read-write volumes, for groups.
TWO = (
    VALID
    + """\
  - name: logs
    mode: read-write
    replicas:
      - {name: site1, export: "10.1.13.5:/crr-logs1", zone: AZ01}
      - {name: dest1, export: "10.2.13.5:/crr-logs2", zone: AZ02}
    replication: {provider: local, source_path: /srv/az1/logs, destination_path: /srv/az2/logs}
"""
)

FULL = f"""\
volumes:
  - name: crr
    mode: read-write
    mount: {{ map_key: crr, options: "rw,nosuid,hard,tcp,timeo=60" }}
    replicas:
      - {{ name: site1, export: "10.1.13.5:/crr-site1", zone: AZ01 }}
      - {{ name: dest1, export: "10.2.13.5:/crr-dest1", zone: AZ02 }}
    replication:
      provider: anf
      source: {ANF_SOURCE}
      destination: {ANF_DESTINATION}
  - name: lab
    mode: read-only
    replicas:
      - {{ name: az1, export: "198.18.1.5:/srv/az1/vol" }}
      - {{ name: az2, export: "[fd00::5]:/srv/az2/vol" }}
    replication: {{ provider: local, source_path: /srv/az1/vol, destination_path: /srv/az2/vol,
                   schedule: 10s }}
    policy: {{ failover_after: 10s, failback: automatic }}
policy:
  probe_interval: 1s
  probe_timeout: 2s
  failover_after: 60s
  recover_after: 30s
  max_lag: 20m
  failback: manual
  read_only_fallback: false
  quorum: 1
  transfer_wait: 5m
autofs: {{ mount_root: /misc, master_dropin: /etc/auto.master.d/nfs-failover.autofs,
          map_file: /etc/auto.nfs-failover, timeout: 10s, negative_timeout: 5s, root: / }}
store: "sqlite:///var/lib/nfs-failover/state.db"
api: {{ listen: "127.0.0.1:8741", token_file: /etc/nfs-failover/token }}
hooks:
  pre_failover: [ [/usr/local/bin/quiesce, --volume, "{{volume}}"] ]
  post_failover: [ {{ argv: [/usr/local/bin/notify, "{{event}}", "{{to_replica}}"], timeout: 5s }} ]
  pre_failback: []
  post_failback: []
"""
