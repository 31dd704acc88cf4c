"""``nfs-failover agent`` and ``nfs-failover autofs render``: apply the desired state."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from nfs_failover import aio
from nfs_failover.agent import Agent, Cycle
from nfs_failover.config import Config, load_config
from nfs_failover.lab.guest_machine import for_lab_client
from nfs_failover.steering import autofs_files
from nfs_failover.steering.healing import HealOutcome, HealPolicy
from nfs_failover.store import StoreError, open_store

err = Console(stderr=True)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="The YAML config file.")]
LabClientOpt = Annotated[
    str | None,
    typer.Option(
        "--lab-client",
        help="Steer this lab client host (client1, ...) from here: its maps, automount and"
        " mounts, through the lab's command channel (state folder: NFS_FAILOVER_LAB_DIR).",
    ),
]
RootOpt = Annotated[
    Path | None,
    typer.Option("--root", help="Write the managed files under this folder instead of /."),
]


def _with_root(config: Config, root: Path | None) -> Config:
    if root is None:
        return config
    autofs = config.autofs.model_copy(update={"root": root.resolve()})
    return config.model_copy(update={"autofs": autofs})


def render(config: ConfigOpt, root: RootOpt = None) -> None:
    """Write the managed autofs files from the desired state and print what changed."""
    loaded = _with_root(load_config(config), root)
    try:
        store = open_store(loaded.store, etcd=loaded.etcd)
        stored = store.all_desired()
        store.close()
    except StoreError as exc:
        err.print(f"[yellow]store unavailable ({exc}); rendering the normal state[/]")
        stored = {}
    applied = autofs_files.apply(loaded, autofs_files.desired_for(loaded, stored))
    for path in applied.changed:
        typer.echo(f"wrote {path}")
    if not applied.changed:
        typer.echo("unchanged")
    err.print(applied.reload)


def agent(
    config: ConfigOpt,
    root: RootOpt = None,
    once: Annotated[bool, typer.Option("--once", help="Run one cycle and exit.")] = False,
    report_only: Annotated[
        bool, typer.Option("--report-only", help="Say which mounts need healing; change none.")
    ] = False,
    name: Annotated[str | None, typer.Option("--name", help="This vantage point's name.")] = None,
    lab_client: LabClientOpt = None,
) -> None:
    """Apply the desired state to this client's maps, heal its mounts, report its probes."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    loaded = _with_root(load_config(config), root)
    machine = None
    if lab_client:
        loaded, machine = for_lab_client(loaded, lab_client)
    store = open_store(loaded.store, etcd=loaded.etcd)
    worker = Agent(
        loaded,
        store,
        name=name or lab_client,
        machine=machine,
        heal_policy=HealPolicy(report_only=report_only),
    )

    async def main() -> None:
        try:
            if once:
                _print_cycle(await worker.cycle())
                return
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await worker.run(stop)
        finally:
            await worker.close()
            store.close()

    with contextlib.suppress(KeyboardInterrupt):
        aio.run(main())


def _print_cycle(cycle: Cycle) -> None:
    if cycle.applied is not None:
        for path in cycle.applied.changed:
            typer.echo(f"wrote {path}")
        err.print(cycle.applied.reload)
    for action in cycle.heals:
        if action.outcome is not HealOutcome.NOTHING:
            typer.echo(f"{action.key}: {action.outcome}: {action.reason}")
    for result in cycle.probes:
        typer.echo(f"{result.export}: {result.summary()}")
    for problem in cycle.problems:
        err.print(f"[red]{problem}[/]")
