"""The configuration file: what loads, what is refused, and how each refusal reads."""

from __future__ import annotations

import contextlib
import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
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
    load_config,
    parse_config,
    summary,
)
from nfs_failover.durations import format_duration, parse_duration
from nfs_failover.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ANF_SOURCE = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-crr/providers"
    "/Microsoft.NetApp/netAppAccounts/anf-az01/capacityPools/pool1/volumes/crr-site1"
)
ANF_DESTINATION = ANF_SOURCE.replace("az01", "az02").replace("crr-site1", "crr-dest1")

# One valid volume; the table below breaks it one way at a time.
VALID = """\
volumes:
  - name: crr
    mode: read-write
    replicas:
      - {name: site1, export: "10.1.13.5:/crr-site1", zone: AZ01}
      - {name: dest1, export: "10.2.13.5:/crr-dest1", zone: AZ02}
    replication: {provider: local, source_path: /srv/az1/vol, destination_path: /srv/az2/vol}
"""

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
            "crr.yaml: volumes[0].replication.schedule: expected a duration from 1s to 1d or"
            ' one of _10minutely, hourly, daily, got "2d"'
        ],
        id="schedule-too-long",
    ),
    pytest.param(
        _with(
            "destination_path: /srv/az2/vol}", "destination_path: /srv/az2/vol, schedule: weekly}"
        ),
        [
            "crr.yaml: volumes[0].replication.schedule: expected a duration from 1s to 1d or"
            ' one of _10minutely, hourly, daily, got "weekly"'
        ],
        id="schedule-unknown-name",
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
            " {event}, {from_replica}, {to_replica}, {from_export}, {to_export}",
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
            "crr.yaml: store: expected sqlite:///ABSOLUTE/PATH or etcd://HOST:PORT,"
            ' got "postgres://db/nfo"'
        ],
        id="store-unknown-scheme",
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


def test_a_missing_file_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config("nope.yaml")
    assert caught.value.problems == ["nope.yaml: cannot read the file: no such file or directory"]


def test_a_directory_is_not_a_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert caught.value.problems == [f"{tmp_path}: cannot read the file: is a directory"]


def test_a_file_that_is_not_utf8_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("crr.yaml").write_bytes(b"volumes: [\xff]\n")
    with pytest.raises(ConfigError) as caught:
        load_config("crr.yaml")
    assert caught.value.problems == ["crr.yaml: not UTF-8 text (bad byte at offset 10)"]


def test_problem_lines_name_the_file_as_the_user_gave_it(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "my.yaml"
    path.parent.mkdir()
    path.write_text(VALID + "colour: blue\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert caught.value.problems == [f"{path}: colour: unknown field"]


def test_config_error_message_is_the_problem_lines() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(VALID + "colour: blue\nshade: red\n", "crr.yaml")
    assert str(caught.value) == "crr.yaml: colour: unknown field\ncrr.yaml: shade: unknown field"


def test_a_full_example_loads_and_summarises_in_one_exact_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("crr.yaml").write_text(FULL)
    config = load_config("crr.yaml")
    assert summary(config) == (
        "crr.yaml: 2 volumes (1 read-write, 1 read-only), 4 replicas, providers: anf, local;"
        " failover after 10s to 1m, max lag 20m"
    )
    assert summary(config, "other.yaml").startswith("other.yaml: 2 volumes")
    assert config.source == "crr.yaml"


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


@pytest.mark.parametrize("name", ["crr.yaml", "local-lab.yaml"])
def test_the_shipped_examples_load(name: str) -> None:
    config = load_config(EXAMPLES / name)
    assert len(config.volumes) == 1


def test_the_local_lab_example_uses_lab_addresses_only() -> None:
    config = load_config(EXAMPLES / "local-lab.yaml")
    volume = config.volumes[0]
    assert [str(r.export) for r in volume.replicas] == [
        "198.18.1.5:/srv/az1/vol",
        "198.18.2.5:/srv/az2/vol",
    ]
    assert volume.replication.provider == "local"


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


# -- durations ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10s", timedelta(seconds=10)),
        ("5m", timedelta(minutes=5)),
        ("1h", timedelta(hours=1)),
        ("1d", timedelta(days=1)),
        ("500ms", timedelta(milliseconds=500)),
        ("1m30s", timedelta(seconds=90)),
        ("1h0m5s", timedelta(hours=1, seconds=5)),
        ("1.5h", timedelta(minutes=90)),
        ("90", timedelta(seconds=90)),
        (90, timedelta(seconds=90)),
        (0.1, timedelta(milliseconds=100)),
        ("0", timedelta(0)),
    ],
)
def test_durations_read_as_people_write_them(text: str | int | float, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "bad",
    ["", "-5s", "-1", "10x", "s", "1m 30s", "30s1m", "1s1s", "1e3", True, False, -1, float("nan")],
)
def test_durations_refuse_anything_else(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"duration"):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("duration", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=60), "1m"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(days=1, hours=2, minutes=3, seconds=4, milliseconds=500), "1d2h3m4s500ms"),
        (timedelta(microseconds=1500), "1.5ms"),
    ],
)
def test_durations_are_written_canonically(duration: timedelta, text: str) -> None:
    assert format_duration(duration) == text


def test_a_negative_duration_cannot_be_written() -> None:
    with pytest.raises(ValueError, match="negative"):
        format_duration(timedelta(seconds=-1))


@given(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=100_000)))
def test_writing_then_reading_a_duration_gives_it_back(duration: timedelta) -> None:
    assert parse_duration(format_duration(duration)) == duration


@given(st.integers(min_value=0, max_value=10**9))
def test_a_plain_number_is_seconds(seconds: int) -> None:
    assert parse_duration(seconds) == timedelta(seconds=seconds)
    assert parse_duration(str(seconds)) == timedelta(seconds=seconds)


@given(
    st.lists(st.integers(min_value=0, max_value=999), min_size=5, max_size=5).map(
        lambda n: f"{n[0]}d{n[1]}h{n[2]}m{n[3]}s{n[4]}ms"
    )
)
def test_reading_then_writing_a_duration_is_stable(text: str) -> None:
    canonical = format_duration(parse_duration(text))
    assert format_duration(parse_duration(canonical)) == canonical


# -- robustness ---------------------------------------------------------------------------

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


def test_the_committed_config_reference_matches_the_models() -> None:
    from nfs_failover.config_reference import render

    committed = (Path(__file__).parent.parent / "docs" / "config.md").read_text()
    assert committed == render(), "run: nfs-failover config-reference > docs/config.md"


def test_a_number_too_long_for_python_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "crr.yaml"
    path.write_text(VALID + "extra: " + "9" * 5000 + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    (line,) = caught.value.problems
    assert line.startswith(f"{path}: invalid YAML: ")


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_config_that_is_not_a_regular_file_is_refused_without_reading_it(
    tmp_path: Path, kind: str
) -> None:
    if kind == "fifo":
        path = tmp_path / "crr.yaml"
        os.mkfifo(path)  # nobody writes: a plain open would hang for ever
    else:
        path = Path("/dev/zero")  # endless: a plain read would take all the memory
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == [f"{path}: cannot read the file: not a regular file"]


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ("rw,hard,a:b:c", 'expected NAME or NAME=VALUE, got "a:b:c" in "rw,hard,a:b:c"'),
        ("rw," + "x" * 17000, 'entry "crr" is longer than 16384 bytes'),
        ("rw,use-weight-only",
         'entry "crr": option "use-weight-only" is set by the ordering itself; leave it out'),
    ],
)  # fmt: skip
def test_mount_options_the_agent_could_not_render_are_refused_at_load(
    options: str, problem: str
) -> None:
    text = VALID.replace("    replicas:", f'    mount: {{options: "{options}"}}\n    replicas:')
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "crr.yaml")
    assert caught.value.problems == [f"crr.yaml: volumes[0].mount.options: {problem}"]


def test_a_map_file_nfs_failover_did_not_write_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(VALID + "autofs: {map_file: /etc/passwd}\n", "crr.yaml")
    assert caught.value.problems == [
        "crr.yaml: autofs.map_file: exists and was not written by nfs-failover; it would be"
        " overwritten"
    ]
