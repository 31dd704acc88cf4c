"""``nfs-failover check-config``: validate a config file and summarise it in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nfs_failover.config import load_config, summary
from nfs_failover.config_reference import render


def check_config(
    file: Annotated[Path, typer.Argument(help="The YAML config file.", show_default=False)],
) -> None:
    """Validate FILE: exit 0 with a summary, or 2 with one line per problem."""
    typer.echo(summary(load_config(file)))


def config_reference() -> None:
    """Print the configuration reference (Markdown), generated from the models."""
    typer.echo(render(), nl=False)
