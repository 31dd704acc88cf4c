"""The models: typed values, defaults, policy overrides, dumps and the JSON schema."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from nfs_failover.config import (
    AnfReplication,
    Config,
    Export,
    Failback,
    HostPort,
    LocalReplication,
    Mode,
    Policy,
    PolicyOverride,
    StoreUrl,
    parse_config,
    summary,
)
from tests.config.helpers import FULL, TWO, VALID
from tests.helpers import DOCS


def test_a_full_example_is_read_into_typed_values() -> None:
    config = parse_config(FULL, "crr.yaml")
    crr, lab = config.volumes
    assert crr.mode is Mode.READ_WRITE and lab.mode is Mode.READ_ONLY
    assert crr.source.export == Export("10.1.13.5", "/crr-site1")
    assert str(lab.destination.export) == "[fd00::5]:/srv/az2/vol"
    assert lab.destination.export.host == "fd00::5"
    assert crr.map_key == "crr" and lab.map_key == "lab"
    assert isinstance(crr.replication, AnfReplication)
    assert crr.replication.source.account == "anf-az01"
    assert isinstance(lab.replication, LocalReplication)
    assert lab.replication.schedule == timedelta(seconds=10)
    assert config.policy.failover_after == timedelta(seconds=60)
    assert config.store == StoreUrl("sqlite", sqlite_path=Path("/var/lib/nfs-failover/state.db"))
    assert config.api.listen == HostPort("127.0.0.1", 8741)
    assert config.hooks.pre_failover[0].argv == ("/usr/local/bin/quiesce", "--volume", "{volume}")
    assert config.hooks.timeout_for(config.hooks.pre_failover[0]) == timedelta(seconds=60)
    assert config.hooks.timeout_for(config.hooks.post_failover[0]) == timedelta(seconds=5)


def test_a_continuous_schedule_walks_the_whole_tree_hourly_unless_told_otherwise() -> None:
    base = {"provider": "local", "source_path": "/a", "destination_path": "/b"}
    continuous = LocalReplication.model_validate({**base, "schedule": "continuous"})
    assert continuous.schedule == "continuous"
    assert continuous.debounce == timedelta(milliseconds=100)
    assert continuous.full_walk_every() == timedelta(hours=1)
    assert continuous.model_dump(mode="json")["schedule"] == "continuous"
    daily = LocalReplication.model_validate({**base, "schedule": "daily"})
    assert daily.full_walk_every() == timedelta(days=1)  # never more often than transfers
    told = LocalReplication.model_validate({**base, "full_walk_interval": "6h"})
    assert told.full_walk_every() == timedelta(hours=6)


def test_a_volume_override_changes_only_its_own_effective_policy() -> None:
    config = parse_config(FULL, "crr.yaml")
    lab = config.effective_policy("lab")
    assert lab.failover_after == timedelta(seconds=10)
    assert lab.failback is Failback.AUTOMATIC
    assert lab.max_lag == config.policy.max_lag
    assert config.effective_policy(config.volume("crr")) == config.policy


def test_a_volume_may_override_every_policy_field_and_only_those() -> None:
    assert list(PolicyOverride.model_fields) == list(Policy.model_fields)
    assert PolicyOverride().model_dump() == dict.fromkeys(Policy.model_fields)
    for name, field in PolicyOverride.model_fields.items():
        assert field.description == Policy.model_fields[name].description, name


def test_a_minimal_config_gets_the_documented_defaults() -> None:
    config = parse_config(VALID, "crr.yaml")
    assert config.policy == Policy()
    assert config.policy.failback is Failback.MANUAL
    assert config.autofs.map_file == Path("/etc/auto.nfs-failover")
    assert config.volumes[0].mount.options == "hard,tcp"
    assert str(config.store) == "sqlite:///var/lib/nfs-failover/state.db"


def test_an_etcd_store_names_its_members_in_order_with_its_prefix_and_tls() -> None:
    text = VALID + (
        'store: "etcd://10.0.0.7:2379,etcd2.example:2379,[fd00::9]:2379"\n'
        "etcd: {prefix: /site-a/nfs/, tls: {ca_file: /etc/nfs-failover/etcd-ca.pem,"
        " cert_file: /etc/nfs-failover/etcd.pem, key_file: /etc/nfs-failover/etcd.key}}\n"
    )
    config = parse_config(text, "crr.yaml")
    assert config.store.etcd_endpoints == (
        HostPort("10.0.0.7", 2379),
        HostPort("etcd2.example", 2379),
        HostPort("fd00::9", 2379),
    )
    assert str(config.store) == "etcd://10.0.0.7:2379,etcd2.example:2379,[fd00::9]:2379"
    assert config.etcd.prefix == "/site-a/nfs/"
    assert config.etcd.tls is not None
    assert config.etcd.tls.key_file == Path("/etc/nfs-failover/etcd.key")
    assert parse_config(VALID, "crr.yaml").etcd.tls is None


def test_a_dumped_config_validates_back_to_the_same_values() -> None:
    config = parse_config(FULL, "crr.yaml")
    dumped = config.model_dump(mode="json")
    assert dumped["policy"]["max_lag"] == "20m"
    assert dumped["volumes"][0]["replicas"][0]["export"] == "10.1.13.5:/crr-site1"
    again = Config.model_validate(json.loads(json.dumps(dumped)))
    assert again.model_dump() == config.model_dump()


def test_models_are_frozen() -> None:
    config = parse_config(VALID, "crr.yaml")
    with pytest.raises(ValidationError):
        config.policy.quorum = 2  # type: ignore[misc]


def test_models_accept_python_values_as_well_as_text() -> None:
    policy = Policy(probe_interval=timedelta(seconds=5), failover_after=timedelta(minutes=2))
    assert policy.probe_interval == timedelta(seconds=5)
    with pytest.raises(ValidationError):
        Policy(failover_after=timedelta(seconds=-1))


def test_the_json_schema_documents_every_field() -> None:
    schema = Config.model_json_schema()
    undocumented = [
        f"{model}.{field}"
        for model, body in schema["$defs"].items()
        for field, spec in body.get("properties", {}).items()
        if "description" not in spec
    ]
    undocumented += [f for f, spec in schema["properties"].items() if "description" not in spec]
    assert undocumented == []
    assert schema["$defs"]["Policy"]["properties"]["max_lag"]["default"] == "20m"
    json.dumps(schema)


def test_the_committed_config_reference_matches_the_models() -> None:
    from nfs_failover.config_reference import render

    committed = (DOCS / "config.md").read_text()
    assert committed == render(), "run: nfs-failover config-reference > docs/config.md"


def test_a_group_names_its_volumes_and_each_volume_knows_its_group() -> None:
    config = parse_config(TWO + "groups:\n  - {name: app, volumes: [logs, crr]}\n", "g.yaml")
    (group,) = config.groups
    assert (group.name, group.volumes) == ("app", ("logs", "crr"))
    assert config.group_of("crr") is group and config.group("app") is group
    assert parse_config(TWO, "g.yaml").group_of("crr") is None
    assert summary(config).startswith("g.yaml: 2 volumes (2 read-write), 1 group, 4 replicas,")
