"""``nfs-failover probe``: probe exports now and show each stage's answer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from nfs_failover import aio
from nfs_failover.config import Export, load_config, parse_duration
from nfs_failover.errors import ConfigError
from nfs_failover.lab import default_state_dir
from nfs_failover.lab.lab import CONFIG_NAME
from nfs_failover.probe import ProbeResult, probe_many

console = Console()


def probe(
    exports: Annotated[
        list[str] | None,
        typer.Argument(help="Exports to probe, as HOST:/PATH.", show_default=False),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Also probe every replica in this config.")
    ] = None,
    lab: Annotated[bool, typer.Option("--lab", help="Also probe the lab's replicas.")] = False,
    timeout: Annotated[
        str, typer.Option("--timeout", "-t", help="Deadline of each probe: 2s, 500ms, ...")
    ] = "2s",
    write: Annotated[
        bool, typer.Option("--write", help="Also check that each export takes writes.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Probe NFS exports: exit 0 when all are up, 1 when any is down."""
    try:
        deadline = parse_duration(timeout).total_seconds()
    except ValueError as exc:
        raise ConfigError([f"--timeout: {exc}"]) from exc
    targets: list[Export | str] = []
    for text in exports or []:
        try:
            targets.append(Export.parse(text))
        except ValueError as exc:
            raise ConfigError([f"probe: {exc}"]) from exc
    if lab:
        config = config or default_state_dir() / CONFIG_NAME
    if config is not None:
        loaded = load_config(config)
        targets += [r.export for v in loaded.volumes for r in v.replicas]
    if not targets:
        raise ConfigError(["probe: name at least one HOST:/PATH, or --config FILE, or --lab"])
    results = aio.run(probe_many(targets, timeout=deadline, check_write=write))
    if as_json:
        typer.echo(json.dumps([r.to_json() for r in results], indent=2))
    else:
        _print_table(results)
    raise typer.Exit(0 if all(r.up for r in results) else 1)


def _print_table(results: list[ProbeResult]) -> None:
    table = Table()
    table.add_column("export", no_wrap=True)
    table.add_column("result")
    table.add_column("stages (ms)")
    for result in results:
        stages = " ".join(
            f"{s.stage}={s.latency_s * 1000:.1f}" if s.ok else f"[red]{s.stage}={s.reason}[/]"
            for s in result.stages
        )
        colour = "green" if result.up else "red"
        table.add_row(result.export, f"[{colour}]{result.summary()}[/]", stages)
    console.print(table)
