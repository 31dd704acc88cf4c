"""The production set-up in deploy/: the systemd units start commands the CLI accepts, the
example config validates, and the units leave the daemon able to unmount and write /etc."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.core import TyperGroup
from typer.exceptions import TyperException

from nfs_failover import cli
from nfs_failover.config import Mode, load_config
from tests.helpers import REPO

DEPLOY = REPO / "deploy"
UNITS = {
    "nfs-failover.service": "run",
    "nfs-failover-agent.service": "agent",
}
CONFIG_PATH = Path("/etc/nfs-failover/config.yaml")
# Each of these gives the service a mount namespace of its own, where `umount --lazy` would
# detach only the namespace's copy of a hung NFS mount; ProtectSystem= would also make /etc
# read-only. User=/DynamicUser=: unmounting and writing /etc need root.
NAMESPACING = frozenset(
    {
        "PrivateTmp",
        "PrivateDevices",
        "PrivateMounts",
        "PrivateNetwork",
        "PrivateUsers",
        "ProtectSystem",
        "ProtectHome",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectHostname",
        "ProtectProc",
        "ProcSubset",
        "ReadOnlyPaths",
        "ReadWritePaths",
        "InaccessiblePaths",
        "ExecPaths",
        "NoExecPaths",
        "TemporaryFileSystem",
        "BindPaths",
        "BindReadOnlyPaths",
        "RootDirectory",
        "RootImage",
        "MountFlags",
        "NetworkNamespacePath",
        "User",
        "DynamicUser",
    }
)

Unit = dict[str, dict[str, list[str]]]


def read_unit(path: Path) -> Unit:
    """Sections and their settings, every value of a repeated key kept in order."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    pending = ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line.startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        assert section is not None, f"{path}: {line!r} before any section"
        key, sep, value = line.partition("=")
        assert sep, f"{path}: {line!r} is not KEY=VALUE"
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def exec_argv(value: str) -> list[str]:
    """An ExecStart= value as argv, without systemd's prefixes (@, -, :, +, !)."""
    argv = shlex.split(value)
    argv[0] = argv[0].lstrip("@-:+!")
    return argv


def parse_invocation(args: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """Parse ``nfs-failover ARGS`` as the CLI does, running nothing: the subcommand's name
    and its parameters. Resilient parsing is off, so an unknown command or option, or a
    missing required one, raises (a ``TyperException``)."""
    root = typer.main.get_command(cli.app)
    assert isinstance(root, TyperGroup)
    assert args and not args[0].startswith("-"), f"expected a subcommand first: {args}"
    with root.make_context("nfs-failover", list(args), resilient_parsing=False) as ctx:
        name, command, rest = root.resolve_command(ctx, list(args))
        assert name is not None and command is not None
        with command.make_context(name, rest, parent=ctx, resilient_parsing=False) as sub:
            return name, dict(sub.params)


@pytest.fixture(scope="module")
def units() -> dict[str, Unit]:
    return {path.name: read_unit(path) for path in sorted((DEPLOY / "systemd").glob("*"))}


def test_deploy_holds_exactly_the_controller_and_the_agent_unit(units: dict[str, Unit]) -> None:
    assert set(units) == set(UNITS)


@pytest.mark.parametrize(("name", "subcommand"), UNITS.items())
def test_exec_start_runs_an_nfs_failover_subcommand_with_options_the_cli_accepts(
    units: dict[str, Unit], name: str, subcommand: str
) -> None:
    starts = units[name]["Service"]["ExecStart"]
    assert len(starts) == 1
    argv = exec_argv(starts[0])
    assert Path(argv[0]).name == "nfs-failover"
    assert Path(argv[0]).is_absolute()
    parsed, params = parse_invocation(argv[1:])
    assert parsed == subcommand
    assert params["config"] == CONFIG_PATH


def test_the_parser_used_on_exec_start_refuses_an_unknown_option() -> None:
    with pytest.raises(TyperException, match="No such option: --bogus"):
        parse_invocation(["run", "--config", str(CONFIG_PATH), "--bogus"])


def test_the_parser_used_on_exec_start_refuses_an_agent_without_its_config() -> None:
    with pytest.raises(TyperException, match="Missing parameter: config"):
        parse_invocation(["agent"])


def test_the_parser_used_on_exec_start_refuses_an_unknown_subcommand() -> None:
    with pytest.raises(TyperException, match="No such command"):
        parse_invocation(["daemon", "--config", str(CONFIG_PATH)])


@pytest.mark.parametrize("name", UNITS)
def test_units_keep_state_private_restart_on_failure_and_wait_for_the_network(
    units: dict[str, Unit], name: str
) -> None:
    unit, service = units[name]["Unit"], units[name]["Service"]
    assert service["StateDirectory"] == ["nfs-failover"]
    assert service["StateDirectoryMode"] == ["0700"]
    assert service["Restart"] == ["on-failure"]
    assert "RestartSec" in service
    assert "TimeoutStopSec" in service
    assert "network-online.target" in unit["Wants"]
    assert "network-online.target" in unit["After"]
    assert "autofs.service" in unit["After"]
    assert units[name]["Install"]["WantedBy"] == ["multi-user.target"]


@pytest.mark.parametrize("name", UNITS)
def test_units_set_nothing_that_would_hide_the_hosts_mounts_or_etc(
    units: dict[str, Unit], name: str
) -> None:
    assert NAMESPACING.isdisjoint(units[name]["Service"])


def test_the_controller_and_the_agent_unit_never_run_together(units: dict[str, Unit]) -> None:
    # `run` contains this host's agent: a second one would write the same maps.
    assert units["nfs-failover.service"]["Unit"]["Conflicts"] == ["nfs-failover-agent.service"]
    assert units["nfs-failover-agent.service"]["Unit"]["Conflicts"] == ["nfs-failover.service"]


def test_the_example_config_validates_with_an_anf_and_an_ontap_read_write_volume() -> None:
    config = load_config(DEPLOY / "config.example.yaml")
    providers = {volume.replication.provider for volume in config.volumes}
    assert providers == {"anf", "ontap"}
    assert all(volume.mode is Mode.READ_WRITE for volume in config.volumes)


def test_the_example_store_lives_in_the_units_state_directory(units: dict[str, Unit]) -> None:
    config = load_config(DEPLOY / "config.example.yaml")
    assert config.store.sqlite_path is not None
    for name in UNITS:
        (state,) = units[name]["Service"]["StateDirectory"]
        assert config.store.sqlite_path.parent == Path("/var/lib") / state


def test_the_example_api_listens_on_loopback_with_its_token_beside_the_config() -> None:
    config = load_config(DEPLOY / "config.example.yaml")
    assert str(config.api.listen).startswith("127.")
    assert config.api.token_file.parent == CONFIG_PATH.parent


def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify checks that ExecStart's program exists: point it at this venv's nfs-failover.
    program = Path(sys.executable).parent / "nfs-failover"
    assert program.exists(), f"{program} missing: install the package into the venv"
    copies = []
    for name in UNITS:
        lines = (DEPLOY / "systemd" / name).read_text().splitlines()
        for index, line in enumerate(lines):
            if line.startswith("ExecStart="):
                argv = exec_argv(line.removeprefix("ExecStart="))
                lines[index] = "ExecStart=" + shlex.join([str(program), *argv[1:]])
        copy = tmp_path / name
        copy.write_text("\n".join(lines) + "\n")
        copies.append(str(copy))
    done = subprocess.run(
        [analyze, "verify", "--man=no", *copies],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # verify exits 0 on unknown keys and unparsable values; it only says so on stderr.
    ours = [line for line in done.stderr.splitlines() if "nfs-failover" in line]
    assert done.returncode == 0, done.stderr
    assert ours == []
