"""``autofs lint`` as a user meets it: one line per problem, exit 1 when any, JSON on ask.

The Typer app is run directly, so these tests do not depend on its registration under
``nfs-failover``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from nfs_failover.cli import autofs_cmd

DATA = Path(__file__).parents[1] / "steering" / "data"


def lint(*args: str | Path) -> tuple[int, str]:
    done = CliRunner().invoke(autofs_cmd.app, ["lint", *map(str, args)])
    assert done.exception is None or isinstance(done.exception, SystemExit), done.exception
    return done.exit_code, done.stdout


def lint_json(*args: str | Path) -> tuple[int, list[dict[str, Any]]]:
    code, out = lint("--json", *args)
    return code, json.loads(out)


def test_clean_maps_print_nothing_and_exit_0() -> None:
    assert lint(DATA / "seed-auto.misc", DATA / "site.misc", DATA / "debian-auto.misc") == (0, "")


def test_clean_master_maps_print_nothing_and_exit_0() -> None:
    assert lint("--master", DATA / "seed-auto.master", DATA / "debian-auto.master") == (0, "")


def test_each_problem_is_one_line_naming_file_and_line_and_the_exit_status_is_1() -> None:
    broken = DATA / "broken.misc"
    code, out = lint(DATA / "site.misc", broken)
    assert code == 1
    lines = out.splitlines()
    assert len(lines) == 11
    assert lines[0] == (
        f'{broken}:2: bad map entry "spoiled": line 3 starts with a blank, so autofs reads it '
        "as part of this entry and ignores the entry (end the line before it with "
        '"\\" to continue the entry)'
    )
    assert lines[1] == f'{broken}:4: "lonely" has no location; autofs ignores the line'
    assert [line.split(":")[1] for line in lines] == [
        "2",
        "4",
        "5",
        "6",
        "7",
        "8",
        "9",
        "10",
        "10",
        "12",
        "14",
    ]


def test_master_flag_reads_files_as_master_maps(tmp_path: Path) -> None:
    master = tmp_path / "auto.master"
    master.write_text("/misc /etc/auto.misc --timeout\nrelative /etc/auto.x\n")
    code, out = lint("--master", master)
    assert code == 1
    assert out.splitlines() == [
        f'{master}:1: "/misc": --timeout needs a number of seconds: autofs 5.1.8 passes '
        '"timeout" to mount instead and keeps its default',
        f'{master}:2: syntax error: mount point "relative" is not an absolute path',
    ]


def test_the_pasted_seed_master_line_is_flagged() -> None:
    code, out = lint("--master", DATA / "seed-auto.master.pasted")
    assert code == 1
    assert "NO-BREAK SPACE (U+00A0)" in out


def test_an_unreadable_file_is_a_problem_line_too(tmp_path: Path) -> None:
    missing = tmp_path / "auto.missing"
    code, out = lint(DATA / "seed-auto.misc", missing, tmp_path)
    assert code == 1
    assert out.splitlines() == [
        f"{missing}:0: cannot read: No such file or directory",
        f"{tmp_path}:0: cannot read: Is a directory",
    ]


def test_bytes_that_are_not_utf8_are_shown_escaped(tmp_path: Path) -> None:
    bad = tmp_path / "auto.latin1"
    bad.write_bytes(b"caf\xe9\n")
    code, out = lint(bad)
    assert code == 1
    assert out == f'{bad}:1: "caf\\xe9" has no location; autofs ignores the line\n'


def test_json_lists_each_entry_with_its_hosts_in_order() -> None:
    code, (report,) = lint_json(DATA / "seed-auto.misc")
    assert code == 0
    assert report == {
        "file": str(DATA / "seed-auto.misc"),
        "direct": False,
        "entries": [
            {
                "key": "crr",
                "line": 1,
                "options": ["fstype=nfs", "rw", "nosuid", "hard", "tcp", "timeo=60"],
                "locations": [
                    {"hosts": [{"name": "10.1.13.5", "weight": None}], "path": "/crr-site1"},
                    {"hosts": [{"name": "10.2.13.5", "weight": None}], "path": "/crr-dest1"},
                ],
                "multi_mount": False,
            }
        ],
        "includes": [],
        "problems": [],
    }


def test_json_shows_weights_and_multi_mounts_and_includes() -> None:
    _, (report,) = lint_json(DATA / "site.misc")
    by_key = {entry["key"]: entry for entry in report["entries"]}
    assert by_key["mixed"]["locations"] == [
        {
            "hosts": [{"name": "host1", "weight": 3}, {"name": "host2", "weight": None}],
            "path": "/blah",
        },
        {"hosts": [{"name": "host3", "weight": 5}], "path": "/some/other/path"},
    ]
    assert by_key["server"]["multi_mount"] is True
    assert by_key["server"]["locations"] == []
    assert report["includes"] == [{"name": "auto.misc.local", "line": 23}]


def test_json_of_master_maps_names_mount_point_map_type_and_options() -> None:
    code, (report,) = lint_json("--master", DATA / "site.master")
    assert code == 0
    assert report["entries"][:2] == [
        {
            "mount_point": "/misc",
            "map": "/etc/auto.misc",
            "type": None,
            "format": None,
            "options": ["--timeout=60", "--negative-timeout=20"],
            "line": 3,
        },
        {
            "mount_point": "/home",
            "map": "auto.home",
            "type": "yp",
            "format": None,
            "options": ["nobrowse"],
            "line": 4,
        },
    ]
    assert report["includes"] == [
        {"name": "dir:/etc/auto.master.d", "line": 12},
        {"name": "auto.master", "line": 13},
    ]


def test_json_carries_problems_and_the_exit_status_still_says_so(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    code, reports = lint_json(DATA / "broken.misc", missing)
    assert code == 1
    assert len(reports[0]["problems"]) == 11
    assert reports[0]["problems"][0]["line"] == 2
    assert reports[1] == {
        "file": str(missing),
        "entries": [],
        "includes": [],
        "problems": [{"line": 0, "message": "cannot read: No such file or directory"}],
    }


def test_lint_without_files_is_a_usage_error() -> None:
    done = CliRunner().invoke(autofs_cmd.app, ["lint"])
    assert done.exit_code == 2


def test_a_map_that_is_not_a_regular_file_is_one_problem(tmp_path: Path) -> None:
    fifo = tmp_path / "auto.fifo"
    os.mkfifo(fifo)
    code, out = lint(fifo, "/dev/zero")
    assert code == 1
    assert out.splitlines() == [
        f"{fifo}:0: cannot read: not a regular file",
        "/dev/zero:0: cannot read: not a regular file",
    ]
