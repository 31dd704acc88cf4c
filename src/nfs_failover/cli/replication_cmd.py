"""``nfs-failover replication``: status and operations of a volume's replication."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from nfs_failover import aio
from nfs_failover.config import (
    LocalReplication,
    Volume,
    format_duration,
    load_config,
    parse_duration,
)
from nfs_failover.errors import ConfigError
from nfs_failover.lab import default_state_dir
from nfs_failover.lab.lab import CONFIG_NAME
from nfs_failover.replication import (
    Divergence,
    OperationResult,
    Provider,
    ReplicationStatus,
    open_provider,
)
from nfs_failover.replication.local import LocalProvider

T = TypeVar("T")
app = typer.Typer(help="A volume's replication: status and operations.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)

VolumeArg = Annotated[str, typer.Argument(help="The volume's name in the config.")]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Config file [default: the lab's lab.yaml]."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
TimeoutOpt = Annotated[str, typer.Option("--timeout", help="Deadline of the operation.")]


def _volume(config: Path | None, name: str) -> Volume:
    path = config or default_state_dir() / CONFIG_NAME
    loaded = load_config(path)
    for volume in loaded.volumes:
        if volume.name == name:
            return volume
    names = ", ".join(v.name for v in loaded.volumes)
    raise ConfigError([f"{path}: no volume {name!r} (volumes: {names})"])


def _seconds(text: str) -> float:
    try:
        return parse_duration(text).total_seconds()
    except ValueError as exc:
        raise ConfigError([f"--timeout: {exc}"]) from exc


def _run(volume: Volume, action: Callable[[Provider], Awaitable[T]]) -> T:
    async def with_provider() -> T:
        provider = open_provider(volume)
        try:
            return await action(provider)
        finally:
            await provider.close()

    return aio.run(with_provider())


def _progress(message: str, fraction: float | None) -> None:
    done = f" ({fraction:.0%})" if fraction is not None else ""
    err.print(f"[dim]{message}{done}[/dim]")


def _jsonable(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _print_status(status: ReplicationStatus, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(_jsonable(asdict(status)), indent=2))
        return
    table = Table(show_header=False)
    lag = f"unknown: {status.raw['lag_unknown']}" if "lag_unknown" in status.raw else "-"
    if status.lag:
        lag = f"{status.lag.total_seconds():.1f}s ({status.lag_source})"
    sent = status.last_transfer_bytes
    rows = [
        ("direction", f"{status.source} -> {status.destination}"),
        ("mirror state", status.mirror_state.value),
        ("relationship", status.relationship_status.value),
        ("healthy", "yes" if status.healthy else f"[red]no[/red] {status.error or ''}"),
        ("lag", lag),
        ("last transfer", str(status.last_transfer_end or "-")),
        ("bytes", "-" if sent is None else str(sent)),
    ]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


def _print_result(result: OperationResult, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(_jsonable(asdict(result)), indent=2))
        return
    verb = result.operation if result.changed else f"{result.operation}: nothing to do"
    err.print(f"{verb}")
    if result.overwritten:
        err.print(f"overwrote {len(result.overwritten)} paths: " + ", ".join(result.overwritten))
    _print_status(result.status, as_json=False)


@app.command()
def status(
    volume: VolumeArg,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = "30s",
) -> None:
    """The replication's state, direction, health and lag."""
    seconds = _seconds(timeout)
    _print_status(_run(_volume(config, volume), lambda p: p.status(timeout=seconds)), as_json)


Operation = Callable[[Provider, float], Awaitable[OperationResult]]


def _operate(
    volume: str, config: Path | None, timeout: str, as_json: bool, call: Operation
) -> None:
    """Run one provider operation with its deadline and progress; print its result."""
    seconds = _seconds(timeout)
    _print_result(_run(_volume(config, volume), lambda p: call(p, seconds)), as_json)


@app.command()
def transfer(
    volume: VolumeArg,
    config: ConfigOpt = None,
    timeout: TimeoutOpt = "1h",
    as_json: JsonOpt = False,
) -> None:
    """Transfer now, source to destination."""
    _operate(
        volume, config, timeout, as_json, lambda p, t: p.transfer_now(timeout=t, progress=_progress)
    )


@app.command("break")
def break_(
    volume: VolumeArg,
    config: ConfigOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Break even while transferring.")] = False,
    timeout: TimeoutOpt = "5m",
    as_json: JsonOpt = False,
) -> None:
    """Break the replication: the destination becomes writable."""
    _operate(
        volume,
        config,
        timeout,
        as_json,
        lambda p, t: p.break_(force=force, timeout=t, progress=_progress),
    )


@app.command()
def resync(
    volume: VolumeArg,
    config: ConfigOpt = None,
    timeout: TimeoutOpt = "1h",
    as_json: JsonOpt = False,
) -> None:
    """Source to destination again; destination changes since the break are overwritten."""
    _operate(volume, config, timeout, as_json, lambda p, t: p.resync(timeout=t, progress=_progress))


@app.command("reverse-resync")
def reverse_resync(
    volume: VolumeArg,
    config: ConfigOpt = None,
    timeout: TimeoutOpt = "1h",
    as_json: JsonOpt = False,
) -> None:
    """Destination to source; the roles swap and the old source's changes are overwritten."""
    _operate(
        volume,
        config,
        timeout,
        as_json,
        lambda p, t: p.reverse_resync(timeout=t, progress=_progress),
    )


@app.command()
def divergence(
    volume: VolumeArg,
    config: ConfigOpt = None,
    timeout: TimeoutOpt = "10m",
    as_json: JsonOpt = False,
) -> None:
    """Files changed on one side only since the last common point."""
    seconds = _seconds(timeout)
    found: Divergence = _run(_volume(config, volume), lambda p: p.divergence(timeout=seconds))
    if as_json:
        typer.echo(json.dumps(_jsonable(asdict(found)), indent=2))
        return
    console.print(f"since {found.since}")
    for side, paths in (
        ("source only", found.source_only),
        ("destination only", found.destination_only),
    ):
        console.print(f"{side}: {len(paths)}")
        for path in paths:
            console.print(f"  {path}")


@app.command()
def serve(volume: VolumeArg, config: ConfigOpt = None) -> None:
    """Run the local engine's schedule in the foreground until interrupted (Ctrl-C)."""
    found = _volume(config, volume)
    if not isinstance(found.replication, LocalReplication):
        raise ConfigError(
            [
                f"volume {volume}: only the local engine transfers on its own "
                f"schedule; {found.replication.provider} schedules on the service"
            ]
        )
    schedule = found.replication.schedule
    when = (
        "transfers as soon as changes settle"
        if isinstance(schedule, str)
        else f"a transfer every {format_duration(schedule)}"
    )
    err.print(f"serving {volume}: {when}")

    async def forever() -> None:
        engine = LocalProvider(found)
        try:
            await engine.serve(asyncio.Event(), progress=_progress)
        finally:
            await engine.close()

    with contextlib.suppress(KeyboardInterrupt):
        aio.run(forever())
