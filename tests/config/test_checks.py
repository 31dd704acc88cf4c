"""Rules across fields that need more than the file: what the agent could render, whose files."""

from __future__ import annotations

from pathlib import Path

import pytest

from nfs_failover.config import parse_config
from nfs_failover.errors import ConfigError
from tests.config.helpers import VALID


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ("rw,hard,a:b:c", 'expected NAME or NAME=VALUE, got "a:b:c" in "rw,hard,a:b:c"'),
        ("rw," + "x" * 17000, 'entry "crr" is longer than 16384 bytes'),
        (
            "rw,use-weight-only",
            'entry "crr": option "use-weight-only" is set by the ordering itself; leave it out',
        ),
    ],
)
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
