"""``nfs-failover lab``: build, inspect, cut off, restore and remove the two-zone lab."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from nfs_failover import netguard
from nfs_failover.durations import parse_duration
from nfs_failover.lab import Lab, LabStatus, system
from nfs_failover.lab import clients as clients_mod
from nfs_failover.lab.clients import MAX_CLIENTS
from nfs_failover.lab.etcd import MAX_MEMBERS as MAX_ETCD_MEMBERS
from nfs_failover.lab.lab import STATE_DIR_ENV

app = typer.Typer(help="The two-zone NFS lab on this machine (needs root).", no_args_is_help=True)
console = Console()
err = Console(stderr=True)

StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        envvar=STATE_DIR_ENV,
        help="The lab's state folder [default: /var/lib/nfs-failover/lab].",
        show_default=False,
    ),
]
ZoneArg = Annotated[
    str,
    typer.Argument(
        help="The zone: az1 (source) or az2 (destination); or an etcd member, etcd1..N."
    ),
]


@app.callback()
def _needs_root() -> None:
    """The two-zone NFS lab on this machine (needs root)."""
    system.require_root()
    os.environ.setdefault(netguard.ENV, "1")  # lab commands talk to the lab alone


def _progress(message: str) -> None:
    err.print(f"[dim]lab:[/dim] {message}")


@app.command()
def up(
    state_dir: StateDir = None,
    clients: Annotated[
        int,
        typer.Option(
            "--clients",
            min=0,
            max=MAX_CLIENTS,
            help="Client hosts to boot (VMs with Debian's kernel, the real automount and "
            "NFS client): client1..N; 0 for the zones only.",
        ),
    ] = 1,
    etcd_members: Annotated[
        int,
        typer.Option(
            "--etcd",
            min=0,
            max=MAX_ETCD_MEMBERS,
            help="etcd members to start (Debian's etcd, each in a namespace of its own, "
            "etcd1..N; cut one off with `lab outage etcdN`); 0 for none.",
        ),
    ] = 0,
) -> None:
    """Build the lab (or check the one that is up) and write its config file."""
    status = Lab.from_state_dir(state_dir).up(_progress, clients=clients, etcd_members=etcd_members)
    _print_status(status)


@app.command("exec")
def exec_(
    client: Annotated[str, typer.Argument(help="The client host: client1, client2, ...")],
    command: Annotated[list[str], typer.Argument(help="The command and its arguments.")],
    timeout: Annotated[
        str, typer.Option("--timeout", help="Kill the command in the guest after this long.")
    ] = "30s",
    state_dir: StateDir = None,
) -> None:
    """Run a command in a client host: its stdout, stderr and exit status come back
    (124 if it was killed at the deadline)."""
    try:
        seconds = parse_duration(timeout).total_seconds()
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--timeout") from None
    host = Lab.from_state_dir(state_dir).client(client)
    result = clients_mod.exec_sync(host, command, timeout=seconds)
    sys.stdout.buffer.write(result.stdout)
    sys.stdout.flush()
    sys.stderr.buffer.write(result.stderr)
    if result.timed_out:
        err.print(f"lab: {client}: {' '.join(command)}: {result.why()}")
        raise typer.Exit(124)
    raise typer.Exit(result.returncode or 0)


@app.command()
def down(state_dir: StateDir = None) -> None:
    """Remove every namespace, process, rule and file the lab made."""
    Lab.from_state_dir(state_dir).down(_progress)
    err.print("lab: down")


@app.command()
def status(
    state_dir: StateDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Each zone's address, export, and whether it is up or cut off."""
    lab_status = Lab.from_state_dir(state_dir).status()
    if as_json:
        typer.echo(json.dumps(lab_status.to_json(), indent=2))
    else:
        _print_status(lab_status)


@app.command()
def outage(zone: ZoneArg, state_dir: StateDir = None) -> None:
    """Cut a zone off: drop ports 111, 635 and 2049 like the seed's NSG rule (an etcd
    member: everything on its link)."""
    lab = Lab.from_state_dir(state_dir)
    changed = lab.outage(zone)
    err.print(f"lab: {zone} {'cut off' if changed else 'was already cut off'}")


@app.command()
def restore(zone: ZoneArg, state_dir: StateDir = None) -> None:
    """Lift a zone's outage (or an etcd member's cut-off)."""
    lab = Lab.from_state_dir(state_dir)
    changed = lab.restore(zone)
    err.print(f"lab: {zone} {'restored' if changed else 'was not cut off'}")


def _print_status(status: LabStatus) -> None:
    table = Table(title=f"lab in {status.state_dir}")
    for column in ("zone", "role", "export", "state", "access"):
        table.add_column(column, no_wrap=True)
    colours = {"up": "green", "cut-off": "red", "stopped": "yellow", "absent": "dim"}
    for zone in status.zones:
        table.add_row(
            zone.name,
            zone.role,
            zone.export,
            f"[{colours[zone.state]}]{zone.state}[/]",
            zone.access,
        )
    console.print(table)
    if status.clients:
        hosts = Table(title="client hosts")
        for column in ("client", "address", "state", "kernel", "boot", "accel"):
            hosts.add_column(column, no_wrap=True)
        for c in status.clients:
            boot = "-" if c.boot_seconds is None else f"{c.boot_seconds:.1f}s"
            hosts.add_row(
                c.name,
                c.address,
                f"[{colours.get(c.state, 'yellow')}]{c.state}[/]",
                c.kernel or "-",
                boot,
                c.accel or "-",
            )
        console.print(hosts)
    if status.etcd:
        members = Table(title="etcd")
        for column in ("member", "address", "state"):
            members.add_column(column, no_wrap=True)
        for m in status.etcd:
            members.add_row(m.name, m.address, f"[{colours.get(m.state, 'yellow')}]{m.state}[/]")
        console.print(members)
    console.print(f"config: {status.config or '(none: run `nfs-failover lab up`)'}")
