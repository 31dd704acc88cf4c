"""Loading a config file: reading it, naming it in problem lines, and its one-line summary."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from nfs_failover.config import load_config, summary, validate_config
from nfs_failover.errors import ConfigError
from tests.config.helpers import FULL, VALID
from tests.helpers import EXAMPLES


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


def test_a_mapping_built_in_python_takes_typed_values_and_names_a_bad_one() -> None:
    data = yaml.safe_load(VALID)
    data["policy"] = {"failover_after": timedelta(seconds=2.5), "probe_interval": "500ms"}
    config = validate_config(data, source="built")
    assert config.policy.failover_after == timedelta(seconds=2.5)
    assert config.policy.probe_interval == timedelta(milliseconds=500)

    data["policy"]["failover_after"] = timedelta(seconds=-1)
    with pytest.raises(ConfigError) as caught:
        validate_config(data, source="built")
    (problem,) = caught.value.problems
    assert problem.startswith("built: policy.failover_after: "), problem
