"""``nfs-failover autofs``: check autofs maps the way automount 5.1.8 reads them.

``lint`` reads master maps or sun-format file maps and reports, one line each, what the
daemon would reject or misread; ``--json`` shows what it would use.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from nfs_failover import files
from nfs_failover.steering.autofs_format import (
    Location,
    MapEntry,
    MapFile,
    MasterEntry,
    MasterFile,
    Problem,
    decode_map,
    parse_map,
    parse_master,
)

MAX_MAP_FILE = 16 * 1024 * 1024  # far beyond any real map

app = typer.Typer(
    name="autofs",
    help="Check autofs maps the way automount reads them.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _autofs() -> None:
    """Check autofs maps the way automount reads them."""


def lint(
    files: Annotated[
        list[Path],
        typer.Argument(metavar="FILE", help="Map files to check.", show_default=False),
    ],
    master: Annotated[
        bool, typer.Option("--master", help="Read the files as master maps.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print each file's entries and problems as JSON.")
    ] = False,
) -> None:
    """Print each problem as FILE:LINE: message; exit 1 when there is any, else 0.

    An unreadable file is a problem on line 0.
    """
    reports = [_report(path, master=master) for path in files]
    if as_json:
        typer.echo(json.dumps(reports, indent=2))
    else:
        for report in reports:
            for problem in report["problems"]:
                line = f"{report['file']}:{problem['line']}: {problem['message']}"
                # Bytes that are not UTF-8 show as \xNN rather than break the output.
                typer.echo(
                    line.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
                )
    if any(report["problems"] for report in reports):
        raise typer.Exit(1)


app.command("lint")(lint)


def _report(path: Path, *, master: bool) -> dict[str, Any]:
    try:
        raw = files.read_regular(path, MAX_MAP_FILE + 1)
        if len(raw) > MAX_MAP_FILE:
            raise OSError(errno.EFBIG, f"larger than {MAX_MAP_FILE} bytes")
        text = decode_map(raw)
    except OSError as exc:
        message = f"cannot read: {exc.strerror or exc}"
        return {
            "file": str(path),
            "entries": [],
            "includes": [],
            "problems": [_problem(Problem(0, message))],
        }
    parsed: MapFile | MasterFile = parse_master(text) if master else parse_map(text)
    report: dict[str, Any] = {"file": str(path)}
    if isinstance(parsed, MapFile):
        report["direct"] = parsed.direct
        report["entries"] = [_map_entry(entry) for entry in parsed.entries]
    else:
        report["entries"] = [_master_entry(entry) for entry in parsed.entries]
    report["includes"] = [{"name": i.name, "line": i.line} for i in parsed.includes]
    report["problems"] = [_problem(problem) for problem in parsed.problems]
    return report


def _problem(problem: Problem) -> dict[str, Any]:
    return {"line": problem.line, "message": problem.message}


def _map_entry(entry: MapEntry) -> dict[str, Any]:
    return {
        "key": entry.key,
        "line": entry.line,
        "options": list(entry.options),
        "locations": [_location(location) for location in entry.locations],
        "multi_mount": entry.multi_mount,
    }


def _location(location: Location) -> dict[str, Any]:
    return {
        "hosts": [{"name": host.name, "weight": host.weight} for host in location.hosts],
        "path": location.path,
    }


def _master_entry(entry: MasterEntry) -> dict[str, Any]:
    return {
        "mount_point": entry.mount_point,
        "map": entry.map_name,
        "type": entry.map_type,
        "format": entry.map_format,
        "options": list(entry.options),
        "line": entry.line,
    }
