"""The ``nfs-failover`` command line: one Typer app, errors caught by family at its edge.

An ``NfsFailoverError`` becomes one line on stderr and an exit status (2 for bad input,
1 for an operation that failed); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from nfs_failover import __version__
from nfs_failover.cli import (
    agent_cmd,
    autofs_cmd,
    config_cmd,
    controller_cmd,
    drill_cmd,
    lab_cmd,
    probe_cmd,
    replication_cmd,
)
from nfs_failover.errors import ConfigError, NfsFailoverError

app = typer.Typer(
    name="nfs-failover",
    help="Automatic, guarded failover between replicated NFS volumes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("check-config")(config_cmd.check_config)
app.command("config-reference")(config_cmd.config_reference)
app.command("probe")(probe_cmd.probe)
app.add_typer(lab_cmd.app, name="lab")
app.add_typer(replication_cmd.app, name="replication")
autofs_cmd.app.command("render")(agent_cmd.render)
app.add_typer(autofs_cmd.app, name="autofs")
app.command("agent")(agent_cmd.agent)
app.command("drill")(drill_cmd.drill)
for command in controller_cmd.COMMANDS:
    app.command()(command)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"nfs-failover {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Automatic, guarded failover between replicated NFS volumes."""


def main() -> None:
    try:
        app()
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        sys.exit(2)
    except NfsFailoverError as exc:
        print(f"nfs-failover: {exc}", file=sys.stderr)
        sys.exit(1)
