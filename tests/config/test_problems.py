"""How each refusal of a config file reads: exactly these problem lines, one per problem."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from nfs_failover.config import load_config, parse_config
from nfs_failover.errors import ConfigError
from tests.config.helpers import ANF_SOURCE, FULL, TWO, VALID


def _with(old: str, new: str, text: str = VALID) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def _problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> list[str]:
    monkeypatch.chdir(tmp_path)
    Path("crr.yaml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config("crr.yaml")
    return caught.value.problems


def _assert_well_formed(problems: list[str], source: str = "crr.yaml") -> None:
    assert problems
    for line in problems:
        assert line.startswith(f"{source}: "), line
        assert "\n" not in line and "\r" not in line and len(line.splitlines()) == 1, line
        assert "pydantic" not in line.lower(), line
        assert "https://errors" not in line, line
        assert "Traceback" not in line, line


BAD_CONFIGS = [
    # -- exports ---------------------------------------------------------------------------
    pytest.param(
        _with('"10.2.13.5:/crr-dest1"', '"10.2.13.5"'),
        ['crr.yaml: volumes[0].replicas[1].export: expected HOST:/PATH, got "10.2.13.5"'],
        id="export-without-colon",
    ),
    pytest.param(
        _with('"10.2.13.5:/crr-dest1"', '"10.2.13.5:crr-dest1"'),
        [
            "crr.yaml: volumes[0].replicas[1].export: expected HOST:/PATH with an absolute path,"
            ' got "10.2.13.5:crr-dest1"'
        ],
        id="export-relative-path",
    ),
    pytest.param(
        _with('"10.2.13.5:/crr-dest1"', '"10.2.13.5:/crr dest1"'),
        [
            "crr.yaml: volumes[0].replicas[1].export: export path must not contain whitespace,"
            ' got "10.2.13.5:/crr dest1"'
        ],
        id="export-whitespace",
    ),
    pytest.param(
        _with('"10.2.13.5:/crr-dest1"', '"10.2.13.5:/crr#dest1"'),
        [
            'crr.yaml: volumes[0].replicas[1].export: export path must not contain "#",'
            ' got "10.2.13.5:/crr#dest1"'
        ],
        id="export-hash",
    ),
    pytest.param(
        _with('"10.2.13.5:/crr-dest1"', '"-fstype=bind:/etc"'),
        [
            "crr.yaml: volumes[0].replicas[1].export: export host must be an IPv4 address,"
            ' a bracketed IPv6 address or a DNS name, got "-fstype=bind:/etc"'
        ],
        id="export-leading-dash",
    ),
    pytest.param(
        _with('"10.2.13.5:/crr-dest1"', '"10.2.13.5:/a&b"'),
        [
            'crr.yaml: volumes[0].replicas[1].export: export path must not contain "&",'
            ' got "10.2.13.5:/a&b"'
        ],
        id="export-autofs-key-substitution",
    ),
    pytest.param(
        _with('"10.2.13.5:/crr-dest1"', '"fd00::5:/crr-dest1"'),
        [
            "crr.yaml: volumes[0].replicas[1].export: an IPv6 address needs brackets,"
            ' such as [fd00::5]:/PATH, got "fd00::5:/crr-dest1"'
        ],
        id="export-unbracketed-ipv6",
    ),
    pytest.param(
        _with('"10.2.13.5:/crr-dest1"', '"10.2.13.5:/crr\\ndest1"'),
        [
            "crr.yaml: volumes[0].replicas[1].export: export path must not contain whitespace,"
            ' got "10.2.13.5:/crr\\ndest1"'
        ],
        id="export-newline-is-quoted-not-printed",
    ),
    # -- durations -------------------------------------------------------------------------
    pytest.param(
        VALID + "policy: {failover_after: soon}\n",
        ['crr.yaml: policy.failover_after: expected a duration such as 10s, 5m or 1h, got "soon"'],
        id="duration-word",
    ),
    pytest.param(
        VALID + "policy: {max_lag: 10x}\n",
        ['crr.yaml: policy.max_lag: expected a duration such as 10s, 5m or 1h, got "10x"'],
        id="duration-unknown-unit",
    ),
    pytest.param(
        VALID + "policy: {probe_interval: -5s}\n",
        ['crr.yaml: policy.probe_interval: a duration must not be negative, got "-5s"'],
        id="duration-negative",
    ),
    pytest.param(
        VALID + "policy: {probe_timeout: true}\n",
        ["crr.yaml: policy.probe_timeout: expected a duration such as 10s, 5m or 1h, got true"],
        id="duration-boolean",
    ),
    pytest.param(
        VALID + "policy: {probe_interval: 0}\n",
        ["crr.yaml: policy.probe_interval: must be more than 0s, got 0"],
        id="duration-zero-interval",
    ),
    pytest.param(
        VALID + "autofs: {timeout: 1500ms}\n",
        ['crr.yaml: autofs.timeout: must be a whole number of seconds, got "1500ms"'],
        id="autofs-timeout-fraction",
    ),
    pytest.param(
        _with("destination_path: /srv/az2/vol}", "destination_path: /srv/az2/vol, schedule: 2d}"),
        [
            "crr.yaml: volumes[0].replication.schedule: expected continuous, a duration from"
            ' 1s to 1d or one of _10minutely, hourly, daily, got "2d"'
        ],
        id="schedule-too-long",
    ),
    pytest.param(
        _with(
            "destination_path: /srv/az2/vol}", "destination_path: /srv/az2/vol, schedule: weekly}"
        ),
        [
            "crr.yaml: volumes[0].replication.schedule: expected continuous, a duration from"
            ' 1s to 1d or one of _10minutely, hourly, daily, got "weekly"'
        ],
        id="schedule-unknown-name",
    ),
    pytest.param(
        _with(
            "destination_path: /srv/az2/vol}",
            "destination_path: /srv/az2/vol, schedule: continuous, debounce: 1ms}",
        ),
        [
            "crr.yaml: volumes[0].replication.debounce: expected a duration from 10ms to 10s,"
            ' got "1ms"'
        ],
        id="debounce-too-short",
    ),
    pytest.param(
        _with(
            "destination_path: /srv/az2/vol}",
            "destination_path: /srv/az2/vol, full_walk_interval: 30s}",
        ),
        [
            "crr.yaml: volumes[0].replication.full_walk_interval: expected a duration from 1m"
            ' to 7d, got "30s"'
        ],
        id="full-walk-too-often",
    ),
    pytest.param(
        _with(
            "destination_path: /srv/az2/vol}",
            "destination_path: /srv/az2/vol, schedule: 10m, full_walk_interval: 5m}",
        ),
        [
            "crr.yaml: volumes[0].replication.full_walk_interval: must not be shorter than"
            " schedule (10m), or every transfer would walk the whole tree, got 5m"
        ],
        id="full-walk-shorter-than-schedule",
    ),
    # -- unknown fields at every level ----------------------------------------------------
    pytest.param(VALID + "colour: blue\n", ["crr.yaml: colour: unknown field"], id="unknown-top"),
    pytest.param(
        _with("    mode: read-write\n", "    mode: read-write\n    colour: blue\n"),
        ["crr.yaml: volumes[0].colour: unknown field"],
        id="unknown-in-volume",
    ),
    pytest.param(
        _with("zone: AZ01}", "zone: AZ01, weight: 1}"),
        ["crr.yaml: volumes[0].replicas[0].weight: unknown field"],
        id="unknown-in-replica",
    ),
    pytest.param(
        _with("    mode: read-write\n", "    mode: read-write\n    mount: {map: crr}\n"),
        ["crr.yaml: volumes[0].mount.map: unknown field"],
        id="unknown-in-mount",
    ),
    pytest.param(
        _with("    mode: read-write\n", "    mode: read-write\n    policy: {grace: 5s}\n"),
        ["crr.yaml: volumes[0].policy.grace: unknown field"],
        id="unknown-in-volume-policy",
    ),
    pytest.param(
        VALID + "policy: {grace: 5s}\n"
        "autofs: {mountpoint: /misc}\n"
        "api: {token: hunter2}\n"
        "hooks: {on_failover: []}\n",
        [
            "crr.yaml: policy.grace: unknown field",
            "crr.yaml: autofs.mountpoint: unknown field",
            "crr.yaml: api.token: unknown field",
            "crr.yaml: hooks.on_failover: unknown field",
        ],
        id="unknown-in-each-section-and-value-not-echoed",
    ),
    pytest.param(
        _with("provider: local,", "provider: local, cluster: c1,"),
        ["crr.yaml: volumes[0].replication.cluster: unknown field"],
        id="field-of-another-provider",
    ),
    # -- missing fields -------------------------------------------------------------------
    pytest.param("policy: {quorum: 1}\n", ["crr.yaml: volumes: missing"], id="missing-volumes"),
    pytest.param(
        VALID.replace(VALID[VALID.index("    replicas:") : VALID.index("    replication:")], ""),
        ["crr.yaml: volumes[0].replicas: missing"],
        id="missing-replicas",
    ),
    pytest.param(
        _with("    mode: read-write\n", ""),
        ["crr.yaml: volumes[0].mode: missing"],
        id="missing-mode",
    ),
    pytest.param(
        _with("provider: local, ", ""),
        ["crr.yaml: volumes[0].replication.provider: missing"],
        id="missing-provider",
    ),
    pytest.param(
        _with(", destination_path: /srv/az2/vol", ""),
        ["crr.yaml: volumes[0].replication.destination_path: missing"],
        id="missing-provider-field",
    ),
    # -- names, modes, providers ----------------------------------------------------------
    pytest.param(
        _with("name: dest1", "name: site1"),
        ['crr.yaml: volumes[0].replicas[1].name: duplicate replica name "site1"'],
        id="duplicate-replica-name",
    ),
    pytest.param(
        VALID + VALID.removeprefix("volumes:\n").replace("13.5", "13.6"),
        ['crr.yaml: volumes[1].name: duplicate volume name "crr" (also volumes[0])'],
        id="duplicate-volume-name",
    ),
    pytest.param(
        VALID + VALID.removeprefix("volumes:\n").replace("name: crr", "name: crr2"),
        [
            "crr.yaml: volumes[1].replicas[0].export: export already used by"
            " volumes[0].replicas[0]",
            "crr.yaml: volumes[1].replicas[1].export: export already used by"
            " volumes[0].replicas[1]",
        ],
        id="export-shared-by-two-volumes",
    ),
    pytest.param(
        _with("name: crr", "name: CRR"),
        [
            'crr.yaml: volumes[0].name: expected lowercase letters, digits, "_" and "-"'
            ' (starting with a letter or digit, at most 63), got "CRR"'
        ],
        id="bad-volume-name",
    ),
    pytest.param(
        _with("mode: read-write", "mode: rw"),
        ['crr.yaml: volumes[0].mode: expected one of "read-write", "read-only", got "rw"'],
        id="bad-mode-lists-choices",
    ),
    pytest.param(
        VALID + "policy: {failback: auto}\n",
        ['crr.yaml: policy.failback: expected one of "manual", "automatic", got "auto"'],
        id="bad-failback-lists-choices",
    ),
    pytest.param(
        _with("provider: local", "provider: gcp"),
        [
            'crr.yaml: volumes[0].replication.provider: expected one of "local", "anf",'
            ' "ontap", got "gcp"'
        ],
        id="unknown-provider",
    ),
    pytest.param(
        _with(
            "{provider: local, source_path: /srv/az1/vol, destination_path: /srv/az2/vol}",
            f"{{provider: anf, source: {ANF_SOURCE}, destination: /subscriptions/x/volumes/y}}",
        ),
        [
            "crr.yaml: volumes[0].replication.destination: expected an ANF volume resource id"
            " such as /subscriptions/SUBSCRIPTION/resourceGroups/GROUP/providers"
            "/Microsoft.NetApp/netAppAccounts/ACCOUNT/capacityPools/POOL/volumes/VOLUME,"
            ' got "/subscriptions/x/volumes/y"'
        ],
        id="bad-anf-resource-id",
    ),
    pytest.param(
        _with(
            "{provider: local, source_path: /srv/az1/vol, destination_path: /srv/az2/vol}",
            f"{{provider: anf, source: {ANF_SOURCE}, destination: {ANF_SOURCE}}}",
        ),
        ["crr.yaml: volumes[0].replication.destination: must not be the same volume as source"],
        id="anf-source-is-destination",
    ),
    pytest.param(
        _with("destination_path: /srv/az2/vol", "destination_path: /srv/az1/vol/mirror"),
        [
            "crr.yaml: volumes[0].replication.destination_path: must not overlap source_path"
            ' ("/srv/az1/vol")'
        ],
        id="local-paths-overlap",
    ),
    pytest.param(
        _with("source_path: /srv/az1/vol", "source_path: srv/az1"),
        ['crr.yaml: volumes[0].replication.source_path: expected an absolute path, got "srv/az1"'],
        id="local-path-relative",
    ),
    pytest.param(
        _with(
            "{provider: local, source_path: /srv/az1/vol, destination_path: /srv/az2/vol}",
            "{provider: ontap, cluster: c1, relationship: svm_dr:crr, credentials_file: pw123}",
        ),
        [
            "crr.yaml: volumes[0].replication.credentials_file: expected the absolute path of"
            " the file holding the secret (value not shown)"
        ],
        id="secret-path-never-echoed",
    ),
    pytest.param(
        _with(
            "      - {name: dest1",
            '      - {name: third, export: "10.3.13.5:/crr"}\n      - {name: dest1',
        ),
        [
            "crr.yaml: volumes[0].replicas: expected exactly 2 replicas (source first,"
            " destination second), got 3"
        ],
        id="three-replicas",
    ),
    # -- mount options and policy rules -----------------------------------------------------
    pytest.param(
        _with("    mode: read-write\n", '    mode: read-write\n    mount: {options: "-hard"}\n'),
        ['crr.yaml: volumes[0].mount.options: mount options must not start with "-", got "-hard"'],
        id="mount-options-leading-dash",
    ),
    pytest.param(
        _with("mode: read-write\n", 'mode: read-only\n    mount: {options: "rw,hard"}\n'),
        ['crr.yaml: volumes[0].mount.options: "rw" contradicts mode read-only'],
        id="read-only-volume-mounted-rw",
    ),
    pytest.param(
        VALID + "policy: {quorum: 0}\n",
        ["crr.yaml: policy.quorum: must be at least 1, got 0"],
        id="quorum-zero",
    ),
    pytest.param(
        VALID + "policy: {probe_interval: 10s, failover_after: 5s, recover_after: 10s}\n",
        [
            "crr.yaml: policy.failover_after: must be at least probe_interval (10s), got 5s",
        ],
        id="grace-shorter-than-probe-interval",
    ),
    pytest.param(
        _with("mode: read-write\n", "mode: read-write\n    policy: {probe_interval: 2m}\n"),
        [
            "crr.yaml: volumes[0].policy.probe_interval: failover_after (1m) would be shorter"
            " than probe_interval (2m)",
            "crr.yaml: volumes[0].policy.probe_interval: recover_after (30s) would be shorter"
            " than probe_interval (2m)",
        ],
        id="volume-override-breaks-policy",
    ),
    pytest.param(
        _with(
            "destination_path: /srv/az2/vol}", "destination_path: /srv/az2/vol, schedule: daily}"
        ),
        [
            "crr.yaml: volumes[0].replication.schedule: must not be longer than max_lag (20m),"
            " or every failover would be refused for lag, got 1d"
        ],
        id="schedule-longer-than-max-lag",
    ),
    pytest.param(
        VALID + 'hooks: {pre_failover: ["/usr/local/bin/quiesce --volume crr"]}\n',
        [
            "crr.yaml: hooks.pre_failover[0]: expected an argv list such as"
            ' [/usr/local/bin/quiesce, --volume, "{volume}"], not a shell command string'
        ],
        id="hook-as-shell-string",
    ),
    pytest.param(
        VALID + 'hooks: {post_failback: [[quiesce, "{vol}"], [notify]]}\n',
        [
            'crr.yaml: hooks.post_failback[0][1]: unknown placeholder "{vol}"; known: {volume},'
            " {event}, {from_replica}, {to_replica}, {from_export}, {to_export}, {group},"
            " {members}",
            "crr.yaml: hooks.post_failback[1][0]: expected the absolute path of the program,"
            ' got "notify"',
        ],
        id="hook-placeholder-and-relative-program",
    ),
    pytest.param(
        VALID + 'hooks: {pre_failover: [[/usr/local/bin/q, "{volume:d}", "{event!r}"]]}\n',
        [
            'crr.yaml: hooks.pre_failover[0][1]: placeholder "{volume:d}" may not have a format'
            " or conversion; write {volume}",
            'crr.yaml: hooks.pre_failover[0][2]: placeholder "{event!r}" may not have a format'
            " or conversion; write {event}",
        ],
        id="hook-placeholder-with-a-format",
    ),
    pytest.param(
        VALID + 'store: "postgres://db/nfo"\n',
        [
            "crr.yaml: store: expected sqlite:///ABSOLUTE/PATH or"
            ' etcd://HOST:PORT[,HOST:PORT...], got "postgres://db/nfo"'
        ],
        id="store-unknown-scheme",
    ),
    pytest.param(
        VALID + 'store: "etcd://10.0.0.7:2379,10.0.0.7:2379"\n',
        ['crr.yaml: store: etcd members must differ, got "etcd://10.0.0.7:2379,10.0.0.7:2379"'],
        id="store-etcd-member-twice",
    ),
    pytest.param(
        VALID + 'store: "etcd://10.0.0.7:2379,10.0.0.8"\n',
        [
            "crr.yaml: store: expected sqlite:///ABSOLUTE/PATH or"
            ' etcd://HOST:PORT[,HOST:PORT...], got "etcd://10.0.0.7:2379,10.0.0.8"'
        ],
        id="store-etcd-member-without-port",
    ),
    pytest.param(
        VALID + 'etcd: {prefix: "nfs-failover"}\n',
        [
            'crr.yaml: etcd.prefix: expected a key prefix such as "/nfs-failover/": segments'
            ' of letters, digits, ".", "_" and "-", each between slashes, got "nfs-failover"'
        ],
        id="etcd-prefix-without-slashes",
    ),
    pytest.param(
        VALID + "etcd: {tls: {ca_file: /etc/ca.pem, cert_file: /etc/client.pem}}\n",
        [
            "crr.yaml: etcd.tls.key_file: required when cert_file is set (a client"
            " certificate and its key)"
        ],
        id="etcd-client-certificate-without-key",
    ),
    pytest.param(
        VALID + "etcd: {tls: {ca_file: /etc/ca.pem, key_file: not-a-path}}\n",
        [
            "crr.yaml: etcd.tls.key_file: expected the absolute path of the file holding the"
            " secret (value not shown)"
        ],
        id="etcd-key-not-a-path-is-not-echoed",
    ),
    pytest.param(
        VALID + 'api: {listen: "127.0.0.1"}\n',
        ['crr.yaml: api.listen: expected HOST:PORT such as 127.0.0.1:8741, got "127.0.0.1"'],
        id="api-listen-without-port",
    ),
    pytest.param(
        VALID + "autofs: {master_dropin: /etc/auto.master.d/nfs-failover}\n",
        ['crr.yaml: autofs.master_dropin: must end in ".autofs" or autofs ignores it'],
        id="dropin-autofs-would-ignore",
    ),
    # -- the file as a whole ----------------------------------------------------------------
    pytest.param(
        VALID + "policy:\n  max_lag: 20m\n  max_lag: 30m\n",
        ["crr.yaml: policy.max_lag: duplicate key (first on line 9)"],
        id="duplicate-yaml-key",
    ),
    pytest.param(
        "volumes:\n  - name: crr\n   mode: read-write\n",
        ["crr.yaml: 3:4: invalid YAML: expected <block end>, but found '<block mapping start>'"],
        id="yaml-syntax-error",
    ),
    pytest.param(
        "volumes: [crr\n",
        ["crr.yaml: 2:1: invalid YAML: expected ',' or ']', but got '<stream end>'"],
        id="yaml-unclosed-bracket",
    ),
    # -- groups ----------------------------------------------------------------------------
    pytest.param(
        TWO + "groups:\n  - {name: app, volumes: [crr, logz]}\n",
        ['crr.yaml: groups[0].volumes[1]: no volume "logz"'],
        id="group-unknown-volume",
    ),
    pytest.param(
        TWO + "groups:\n  - {name: app, volumes: [crr]}\n",
        [
            "crr.yaml: groups[0].volumes: expected at least 2 volumes (a volume alone fails"
            " over on its own), got 1"
        ],
        id="group-of-one-volume",
    ),
    pytest.param(
        TWO + "groups:\n  - {name: app, volumes: [crr, logs, crr]}\n",
        ['crr.yaml: groups[0].volumes[2]: volume "crr" listed twice (also volumes[0])'],
        id="group-lists-a-volume-twice",
    ),
    pytest.param(
        TWO
        + "groups:\n  - {name: app, volumes: [crr, logs]}\n  - {name: web, volumes: [logs, crr]}\n",
        [
            'crr.yaml: groups[1].volumes[0]: volume "logs" is already in group "app"'
            " (groups[0]); a volume is in at most one group",
            'crr.yaml: groups[1].volumes[1]: volume "crr" is already in group "app"'
            " (groups[0]); a volume is in at most one group",
        ],
        id="volume-in-two-groups",
    ),
    pytest.param(
        TWO + "groups:\n  - {name: logs, volumes: [crr, logs]}\n",
        ['crr.yaml: groups[0].name: "logs" is a volume\'s name; a group needs a name of its own'],
        id="group-named-like-a-volume",
    ),
    pytest.param(
        _with("mode: read-write", "mode: read-only", TWO)
        + "groups:\n  - {name: app, volumes: [crr, logs]}\n",
        [
            "crr.yaml: groups[0].volumes: mixes read-write and read-only volumes (crr read-only,"
            " logs read-write); a group has one mode"
        ],
        id="group-mixes-modes",
    ),
    pytest.param(
        TWO + "groups:\n  - {name: app, volumes: [crr, logs]}\n  - {name: app, volumes: [x, y]}\n",
        [
            'crr.yaml: groups[1].name: duplicate group name "app" (also groups[0])',
            'crr.yaml: groups[1].volumes[0]: no volume "x"',
            'crr.yaml: groups[1].volumes[1]: no volume "y"',
        ],
        id="group-name-twice",
    ),
    pytest.param(
        "", ["crr.yaml: the file is empty; expected a mapping with volumes"], id="empty-file"
    ),
    pytest.param(
        "# only a comment\n",
        ["crr.yaml: the file is empty; expected a mapping with volumes"],
        id="comments-only",
    ),
    pytest.param(
        "- crr\n- lab\n",
        ["crr.yaml: expected a mapping of settings at the top, got a list"],
        id="top-level-list",
    ),
    pytest.param(
        "volumes: []\n", ["crr.yaml: volumes: expected at least one volume"], id="no-volumes"
    ),
    pytest.param(
        "volumes: {crr: {}}\n",
        ["crr.yaml: volumes: expected a list, got a mapping"],
        id="volumes-not-a-list",
    ),
    pytest.param(
        "volumes: !!python/object/apply:os.system [ls]\n",
        [
            "crr.yaml: 1:10: invalid YAML: could not determine a constructor for the tag"
            " 'tag:yaml.org,2002:python/object/apply:os.system'"
        ],
        id="python-tag-refused",
    ),
    pytest.param(
        """\
volumes:
  - name: CRR
    mode: rw
    replicas:
      - {name: site1, export: "10.1.13.5", zone: AZ01}
      - {name: dest1, export: "10.2.13.5:/crr-dest1", zone: AZ02}
    replication: {provider: local, source_path: /srv/az1/vol}
policy: {failover_after: soon}
colour: blue
""",
        [
            'crr.yaml: volumes[0].name: expected lowercase letters, digits, "_" and "-"'
            ' (starting with a letter or digit, at most 63), got "CRR"',
            'crr.yaml: volumes[0].mode: expected one of "read-write", "read-only", got "rw"',
            'crr.yaml: volumes[0].replicas[0].export: expected HOST:/PATH, got "10.1.13.5"',
            "crr.yaml: volumes[0].replication.destination_path: missing",
            "crr.yaml: policy.failover_after: expected a duration such as 10s, 5m or 1h,"
            ' got "soon"',
            "crr.yaml: colour: unknown field",
        ],
        id="every-problem-at-once-in-file-order",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD_CONFIGS)
def test_a_bad_config_is_refused_with_exactly_these_problem_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, expected: list[str]
) -> None:
    problems = _problems(tmp_path, monkeypatch, text)
    assert problems == expected
    _assert_well_formed(problems)


def test_the_table_covers_at_least_25_ways_to_be_wrong() -> None:
    assert len(BAD_CONFIGS) >= 25


def test_the_base_of_the_table_is_itself_valid() -> None:
    config = parse_config(VALID, "crr.yaml")
    assert config.volumes[0].name == "crr"


def test_config_error_message_is_the_problem_lines() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(VALID + "colour: blue\nshade: red\n", "crr.yaml")
    assert str(caught.value) == "crr.yaml: colour: unknown field\ncrr.yaml: shade: unknown field"


_JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)

_PLACES = [
    ("volumes", 0, "name"),
    ("volumes", 0, "mode"),
    ("volumes", 0, "mount"),
    ("volumes", 0, "replicas"),
    ("volumes", 0, "replicas", 1),
    ("volumes", 0, "replicas", 1, "export"),
    ("volumes", 0, "replication"),
    ("volumes", 0, "replication", "schedule"),
    ("volumes", 0, "policy"),
    ("policy",),
    ("policy", "max_lag"),
    ("autofs",),
    ("hooks",),
    ("hooks", "pre_failover"),
    ("store",),
    ("api",),
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_PLACES), _JUNK), min_size=1, max_size=3))
def test_any_junk_value_gives_well_formed_problem_lines(
    changes: list[tuple[tuple[Any, ...], Any]],
) -> None:
    data: Any = yaml.safe_load(FULL)
    for place, value in changes:
        with contextlib.suppress(IndexError, KeyError, TypeError):
            target = data
            for step in place[:-1]:
                target = target[step]
            target[place[-1]] = value
    try:
        parse_config(yaml.safe_dump(data), "crr.yaml")
    except ConfigError as exc:
        _assert_well_formed(exc.problems)
