"""``nfs-failover drill``: the whole failover cycle on the local lab, measured and verified."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from nfs_failover import aio, netguard
from nfs_failover.config import Mode
from nfs_failover.drill.model import DrillReport
from nfs_failover.drill.options import NFS_VERSIONS, SEED_OPTIONS, DrillOptions
from nfs_failover.drill.report import write_report
from nfs_failover.drill.run import Drill
from nfs_failover.durations import parse_duration
from nfs_failover.lab import Lab, system
from nfs_failover.lab.lab import STATE_DIR_ENV

console = Console()
err = Console(stderr=True)


def _seconds(value: str, option: str) -> float:
    try:
        seconds = parse_duration(value).total_seconds()
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None
    if seconds <= 0:
        raise typer.BadParameter(f"{value!r}: must be more than 0", param_hint=option)
    return seconds


def _version(value: str) -> str:
    if value not in NFS_VERSIONS:
        raise typer.BadParameter(
            f"{value!r}: must be one of {', '.join(NFS_VERSIONS)}", param_hint="--nfs-version"
        )
    return value


def _compare(value: str | None) -> str | None:
    if value not in (None, "seed"):
        raise typer.BadParameter(f"{value!r}: the one comparison is 'seed'", param_hint="--compare")
    return value


def _mount_options(value: str) -> str:
    parts = [p.strip() for p in value.split(",")]
    bad = [p for p in parts if not re.fullmatch(r"[A-Za-z0-9_]+(=[A-Za-z0-9_.:/-]+)?", p)]
    if bad or not parts:
        raise typer.BadParameter(
            f"{bad[0] if bad else value!r}: not a mount option", param_hint="--mount-options"
        )
    if any(p.startswith("vers=") or p.startswith("nfsvers=") for p in parts):
        raise typer.BadParameter(
            "give the version with --nfs-version, not vers=", param_hint="--mount-options"
        )
    return ",".join(parts)


def drill(
    mode: Annotated[
        Mode, typer.Option("--mode", help="The volume's mode: read-write or read-only.")
    ] = Mode.READ_WRITE,
    grace: Annotated[
        str, typer.Option("--grace", help="Grace period before a failover (failover_after).")
    ] = "5s",
    schedule: Annotated[str, typer.Option("--schedule", help="Replication interval.")] = "10s",
    flaps: Annotated[
        int,
        typer.Option(
            "--flaps",
            min=0,
            max=1000,
            help="First cut zone 1 off N times for less than the grace period; "
            "none of them may fail over.",
        ),
    ] = 0,
    clients: Annotated[
        int,
        typer.Option(
            "--clients",
            min=1,
            max=8,
            help="Client hosts (VMs with the kernel NFS client and the real automount), "
            "each running the agent and the applications.",
        ),
    ] = 2,
    nfs_version: Annotated[
        str, typer.Option("--nfs-version", help="NFS version the clients mount: 3 or 4.1.")
    ] = "3",
    mount_options: Annotated[
        str,
        typer.Option(
            "--mount-options",
            help="Mount options of /misc/crr, without vers= (--nfs-version adds it; NFSv3 "
            "also gets nolock: the lab's servers have no lock manager).",
        ),
    ] = SEED_OPTIONS,
    hang_after: Annotated[
        str,
        typer.Option(
            "--hang-after",
            help="An application operation with no answer for this long is a hung "
            "process: the watchdog kills it and starts it again.",
        ),
    ] = "3s",
    compare: Annotated[
        str | None,
        typer.Option(
            "--compare",
            help="seed: first run the seed article's own setup (its auto.misc line, the "
            "break by hand) with the same applications, outage and restore; report both.",
        ),
    ] = None,
    operator_delay: Annotated[
        str,
        typer.Option(
            "--operator-delay",
            help="With --compare seed: when the operator breaks, after the outage.",
        ),
    ] = "60s",
    keep: Annotated[
        bool, typer.Option("--keep", help="Leave the lab up even if the drill brought it up.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary as JSON on stdout.")
    ] = False,
    report: Annotated[
        Path, typer.Option("--report", help="Folder for drill.json, drill.html, timeline.svg.")
    ] = Path("drill-report"),
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir",
            envvar=STATE_DIR_ENV,
            show_default=False,
            help="The lab's state folder [default: /var/lib/nfs-failover/lab].",
        ),
    ] = None,
) -> None:
    """Run the whole failover cycle on the lab: outage, failover, restore, failback; verify
    that no acknowledged write was lost; report the figures. Exit 0 only if all held."""
    options = DrillOptions(
        mode=mode,
        grace=_seconds(grace, "--grace"),
        schedule=_seconds(schedule, "--schedule"),
        flaps=flaps,
        keep=keep,
        clients=clients,
        nfs_version=_version(nfs_version),
        mount_options=_mount_options(mount_options),
        hang_after=_seconds(hang_after, "--hang-after"),
        compare=_compare(compare),
        operator_delay=_seconds(operator_delay, "--operator-delay"),
    )
    system.require_root()
    os.environ.setdefault(netguard.ENV, "1")  # the drill talks to the lab alone
    report.mkdir(parents=True, exist_ok=True)
    _log_to(report / "drill.log")
    lab = Lab.from_state_dir(state_dir)
    interactive = err.is_terminal and not as_json
    runner = Drill(lab, options, say=None if interactive else _line)
    result = _with_live_view(runner) if interactive else aio.run(runner.run())
    files = write_report(result, report)
    if runner.failure and not any(c.name != "the drill ran to its end" for c in result.checks):
        typer.echo(f"nfs-failover: the drill stopped: {runner.failure}", err=True)
    if as_json:
        typer.echo(json.dumps(result.summary_json(), indent=2))
    else:
        _print_summary(result)
        console.print(f"report: {files.html}  (JSON: {files.json})")
    raise typer.Exit(0 if result.passed else 1)


def _line(message: str) -> None:
    err.print(f"[dim]drill:[/dim] {message}", highlight=False)


def _log_to(path: Path) -> None:
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def _with_live_view(runner: Drill) -> DrillReport:
    """Run the drill on this thread's event loop; a rich view follows it from another."""

    def view() -> Panel:
        live = runner.live
        head = Table.grid(padding=(0, 2))
        head.add_row("phase", Text(live.phase, style="bold"))
        head.add_row("elapsed", f"{time.time() - live.started:.1f}s")
        head.add_row("client on", live.replica or "-")
        head.add_row("operations", f"{live.ok} ok, {live.failed} failed")
        head.add_row("controller", Text(live.decision or "-", overflow="ellipsis"))
        lines = Text("\n".join(live.events[-8:]), style="dim")
        return Panel(Group(head, lines), title="nfs-failover drill", border_style="blue")

    with Live(get_renderable=view, console=err, refresh_per_second=4, transient=False):
        return aio.run(runner.run())


CLIENT_FIGURES = (  # (header, attribute or attributes) of the clients table
    ("rto s", "rto_s"),
    ("blocked s", "write_blocked_s"),
    ("hung", "hung_processes"),
    ("files ok/lost", ("writes_acknowledged", "writes_lost")),
    ("rows ok/lost", ("rows_acknowledged", "rows_lost")),
    ("db", "database"),
    ("stale", "stale_reads"),
    ("back s", "back_on_source_s"),
)


def _clients_table(result: DrillReport) -> Table:
    """One row per client host (the whole of each is in drill.json)."""
    table = Table(title="clients")
    table.add_column("client", no_wrap=True)
    for header, _ in CLIENT_FIGURES:
        table.add_column(header, justify="right")
    for client in result.clients:
        cells = []
        for _, names in CLIENT_FIGURES:
            values = [getattr(client, n) for n in ((names,) if isinstance(names, str) else names)]
            cells.append("/".join("-" if v is None else str(v) for v in values))
        table.add_row(client.name, *cells)
    return table


def _print_summary(result: DrillReport) -> None:
    table = Table(title="drill " + ("[green]PASSED[/]" if result.passed else "[red]FAILED[/]"))
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in result.summary_json().items():
        if key in ("passed", "report_html", "clients"):
            continue
        table.add_row(key, "-" if value is None else str(value))
    console.print(table)
    if result.clients:
        console.print(_clients_table(result))
    checks = Table(title="checks")
    checks.add_column("check")
    checks.add_column("", justify="center")
    checks.add_column("evidence")
    for check in result.checks:
        checks.add_row(
            check.name, "[green]ok[/]" if check.passed else "[red]FAILED[/]", check.detail
        )
    console.print(checks)
    if result.comparison:
        side = Table(title="the seed's own setup and nfs-failover")
        side.add_column("figure")
        side.add_column("seed", justify="right")
        side.add_column("nfs-failover", justify="right")
        for label, row in result.comparison.items():
            side.add_row(
                label,
                *("-" if row.get(k) is None else str(row.get(k)) for k in ("seed", "nfs-failover")),
            )
        console.print(side)
