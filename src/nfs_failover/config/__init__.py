"""The configuration file: its models, their checks, and loading with one-line problems.

Import from here; the modules below are the package's own layout:

- ``values``: the small value types other modules reuse (``Export``, ``HostPort``,
  ``AnfVolumeId``, ``StoreUrl``) and the choices ``Mode`` and ``Failback``;
- ``fields``: the field types, each a validator with its JSON schema (durations, names,
  paths, mount options, hook argv lists);
- ``models``: ``Config`` and the models under it;
- ``checks``: the rules across fields (unique names, ``failover_after >= probe_interval``);
- ``loading``: ``load_config``, the YAML with its line marks, and ``summary``;
- ``problems``: how problems read, and pydantic's errors rewritten as problem lines.

Durations are ``datetime.timedelta`` (see ``nfs_failover.durations``), written back
canonically (``1m30s``) when a model is dumped in JSON mode.
"""

from __future__ import annotations

from nfs_failover.config.fields import HOOK_PLACEHOLDERS
from nfs_failover.config.loading import load_config, parse_config, summary, validate_config
from nfs_failover.config.models import (
    PROVIDERS,
    AnfReplication,
    ApiSettings,
    AutofsSettings,
    Config,
    EtcdSettings,
    EtcdTls,
    GaneshaExport,
    Group,
    Hook,
    Hooks,
    LocalReplication,
    MountSettings,
    OntapReplication,
    Policy,
    PolicyOverride,
    Replica,
    Replication,
    Volume,
)
from nfs_failover.config.values import AnfVolumeId, Export, Failback, HostPort, Mode, StoreUrl
from nfs_failover.durations import format_duration, parse_duration

__all__ = [
    "HOOK_PLACEHOLDERS",
    "PROVIDERS",
    "AnfReplication",
    "AnfVolumeId",
    "ApiSettings",
    "AutofsSettings",
    "Config",
    "EtcdSettings",
    "EtcdTls",
    "Export",
    "Failback",
    "GaneshaExport",
    "Group",
    "Hook",
    "Hooks",
    "HostPort",
    "LocalReplication",
    "Mode",
    "MountSettings",
    "OntapReplication",
    "Policy",
    "PolicyOverride",
    "Replica",
    "Replication",
    "StoreUrl",
    "Volume",
    "format_duration",
    "load_config",
    "parse_config",
    "parse_duration",
    "summary",
    "validate_config",
]
