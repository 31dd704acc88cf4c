"""The operator's commands: ``run``, ``controller``, ``status``, ``plan``, ``history`` and
the manual actions (``failover``, ``failback``, ``switchover``, ``pause``, ``resume``).

Manual actions go to the running controller over its HTTP API with the bearer token, so
there is only ever one actor; ``plan`` and ``history`` also work with no controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from pydantic import TypeAdapter, ValidationError
from rich.console import Console
from rich.table import Table

from nfs_failover import aio, control
from nfs_failover.agent import Agent
from nfs_failover.api import build_app, read_token, serve
from nfs_failover.cli.agent_cmd import LabClientOpt
from nfs_failover.config import Config, load_config
from nfs_failover.control import ControlError
from nfs_failover.controller.loop import Controller
from nfs_failover.controller.snapshot import JournalEntry, VolumeStatus, action_result
from nfs_failover.lab import default_state_dir
from nfs_failover.lab.guest_machine import for_lab_client
from nfs_failover.lab.lab import CONFIG_NAME
from nfs_failover.store import open_store

console = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="Config file [default: the lab's lab.yaml].")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
VolumeArg = Annotated[str, typer.Argument(help="The volume's name.")]
_Reply = TypeVar("_Reply")
_STATUS = TypeAdapter(list[VolumeStatus])


def _config(path: Path | None) -> Config:
    return load_config(path or default_state_dir() / CONFIG_NAME)


def run(
    config: ConfigOpt = None,
    no_api: Annotated[bool, typer.Option("--no-api", help="Do not serve the HTTP API.")] = False,
    lab_client: LabClientOpt = None,
) -> None:
    """Run the controller and this host's agent (the single-host mode) until stopped."""
    _serve(_config(config), no_api=no_api, lab_client=lab_client, with_agent=True)


def controller(
    config: ConfigOpt = None,
    no_api: Annotated[bool, typer.Option("--no-api", help="Do not serve the HTTP API.")] = False,
) -> None:
    """Run the controller alone, without an agent on this host: the NFS clients run
    `nfs-failover agent`, sharing an etcd store with it."""
    loaded = _config(config)
    if loaded.store.scheme != "etcd":
        err.print(
            f"[yellow]{loaded.store}: agents on other hosts cannot share this store; only an"
            " agent on this host will see its desired state[/]"
        )
    _serve(loaded, no_api=no_api, lab_client=None, with_agent=False)


def _serve(loaded: Config, *, no_api: bool, lab_client: str | None, with_agent: bool) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    token = None if no_api else read_token(loaded.api.token_file)
    store = open_store(loaded.store, etcd=loaded.etcd)
    agents = []
    if lab_client:
        client_view, machine = for_lab_client(loaded, lab_client)
        agents.append(Agent(client_view, store, name=lab_client, machine=machine))
    elif with_agent:
        agents.append(Agent(loaded, store))
    running = Controller(loaded, store, agents=agents)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        jobs = [running.run(stop)]
        if token is not None:
            app = build_app(running, token)
            jobs.append(serve(app, loaded.api.listen, stop, control_socket=loaded.api.socket))
        try:
            await asyncio.gather(*jobs)
        finally:
            await running.close()
            for agent in agents:
                await agent.close()
            store.close()

    with contextlib.suppress(KeyboardInterrupt):
        aio.run(main())


def plan(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """What the controller would do now and why; changes nothing."""
    loaded = _config(config)

    async def once() -> dict[str, str]:
        store = open_store(loaded.store, etcd=loaded.etcd)
        controller = Controller(loaded, store, name="plan")
        try:
            return {name: str(d) for name, d in (await controller.plan()).items()}
        finally:
            await controller.close()
            store.close()

    plans = aio.run(once())
    if as_json:
        typer.echo(json.dumps(plans, indent=2))
        return
    for name, decision in plans.items():
        console.print(f"[bold]{name}[/]: {decision}")


def status(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Each volume: mode, state, active and fenced replicas, the storage fence,
    replication, last action; the controller that holds the lease, and the store's error
    while it does not answer."""
    loaded = _config(config)
    volumes = _api(loaded, "GET", "/status", reply=_STATUS)
    if as_json:
        typer.echo(json.dumps(_STATUS.dump_python(volumes, mode="json"), indent=2))
        return
    errors = list(dict.fromkeys(v.store_error for v in volumes if v.store_error))
    leader = next((v.leader for v in volumes if v.leader), None)
    console.print(f"leader: {leader or ('unknown' if errors else 'none')}", highlight=False)
    for error in errors:
        console.print(f"[yellow]store unreachable: {error}; showing what it last said[/]")
    table = Table()
    columns = ("volume", "mode", "state", "active", "fenced", "storage fence", "replication")
    for column in (*columns, "lag", "last action", "decision"):
        table.add_column(column)
    for v in volumes:
        storage = v.storage_fence
        table.add_row(
            v.name if v.group is None else f"{v.name} (group {v.group})",
            v.mode,
            v.state,
            v.active,
            ", ".join(v.fenced) or "-",
            f"{storage.replica} {storage.state}" if storage else "-",
            v.replication,
            "-" if v.lag_s is None else f"{v.lag_s:.0f}s",
            v.last_action or "-",
            v.decision or "-",
        )
    console.print(table)


def history(
    config: ConfigOpt = None,
    volume: Annotated[
        str | None,
        typer.Option("--volume", help="Only this volume (and its group's entries), or group."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="The newest N entries.")] = 200,
    as_json: JsonOpt = False,
) -> None:
    """The journal as a timeline (read from the store; no controller needed)."""
    loaded = _config(config)
    store = open_store(loaded.store, etcd=loaded.etcd)
    group = loaded.group_of(volume) if volume is not None else None
    try:
        # A member's journal comes with its group's entries (the group's workflows).
        names = [volume] if group is None else [volume, group.name]
        found = [e for name in names for e in store.recent_events(name, limit=limit)]
        events = sorted(found, key=lambda e: e.id)[-limit:]
    finally:
        store.close()
    entries = [JournalEntry.of(e) for e in events]
    if as_json:
        typer.echo(json.dumps([e.model_dump(mode="json") for e in entries], indent=2))
        return
    for e in entries:
        when = datetime.fromtimestamp(e.at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        step = f" {e.step} {e.phase}" if e.step else ""
        detail = e.detail.get("reason") or e.detail.get("refused") or ""
        console.print(f"{when} {e.volume} {e.kind}{step} {detail}".rstrip())


def _action(action: str, volume: str | None, force: bool, config: Path | None) -> None:
    loaded = _config(config)
    if volume and action not in ("pause", "resume"):
        path = control.path_for("volumes", volume, action)
    else:
        path = control.path_for(action, query={"volume": volume} if volume else None)
    # A body only where the route reads one: a controller that answers without reading
    # it may close before it is sent, and a request that looks undelivered is sent again.
    body = {"force": force} if action in ("failover", "abort") else None
    result = _api(loaded, "POST", path, body, reply=action_result, timeout=3600)
    typer.echo(json.dumps(result.model_dump(mode="json"), indent=2))


def failover(
    volume: VolumeArg,
    force: Annotated[
        bool, typer.Option("--force", help="Override the lag and mirror checks.")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Fail a volume over now (read-write: break, fence, steer)."""
    _action("failover", volume, force, config)


def failback(volume: VolumeArg, config: ConfigOpt = None) -> None:
    """Fail back: preserve, reverse resync, final transfer, swap back, steer."""
    _action("failback", volume, False, config)


def switchover(volume: VolumeArg, config: ConfigOpt = None) -> None:
    """A planned move of the active side: final transfer first, then break and steer."""
    _action("switchover", volume, False, config)


def abort(
    volume: VolumeArg,
    force: Annotated[
        bool,
        typer.Option("--force", help="Abort even past a break or a reverse resync."),
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """End the volume's running workflow where it stands (journaled), and say what state
    it leaves the volume in."""
    _action("abort", volume, force, config)


def pause(volume: Annotated[str | None, typer.Argument()] = None, config: ConfigOpt = None) -> None:
    """Stop automatic actions (for one volume or all); manual commands still run."""
    _action("pause", volume, False, config)


def resume(
    volume: Annotated[str | None, typer.Argument()] = None, config: ConfigOpt = None
) -> None:
    """Resume automatic actions."""
    _action("resume", volume, False, config)


COMMANDS = (
    run,
    controller,
    status,
    plan,
    history,
    failover,
    failback,
    switchover,
    abort,
    pause,
    resume,
)


def _api(
    config: Config,
    method: str,
    path: str,
    body: object = None,
    *,
    reply: TypeAdapter[_Reply],
    timeout: float = 10.0,
) -> _Reply:
    """Call the running controller over its Unix socket (``control``); the token goes only
    with actions, and only to a listener proven to be root's or this user's. The answer
    is checked against ``reply``, the controller's own snapshot model of it."""
    token = read_token(config.api.token_file) if method == "POST" else None
    socket_path = config.api.socket
    answer = control.request(socket_path, method, path, token=token, body=body, timeout=timeout)
    try:
        return reply.validate_python(answer)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the reply"
        raise ControlError(
            f"the controller at {socket_path} answered {method} {path} with a reply this"
            f" version does not know ({exc.error_count()} problems; first, {where}:"
            f" {first['msg'][:1].lower()}{first['msg'][1:]})"
        ) from None
