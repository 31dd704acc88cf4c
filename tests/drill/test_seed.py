"""The seed's own setup as the comparison replays it, and the side-by-side figures."""

from __future__ import annotations

import re

from nfs_failover.drill.seed import seed_map_lines
from nfs_failover.drill.verify import compare
from tests.drill.report_helpers import client_figures


def test_the_seed_setup_is_the_articles_master_line_and_map_line() -> None:
    master, line = seed_map_lines(
        "crr",
        "rw,nosuid,hard,tcp,timeo=60,vers=3,nolock",
        "10.1.13.5:/crr-site1",
        "10.2.13.5:/crr-dest1",
    )

    assert master == "/misc /etc/auto.nfs-failover --timeout 10\n"
    assert line == (
        "crr -fstype=nfs,rw,nosuid,hard,tcp,timeo=60,vers=3,nolock"
        " 10.1.13.5:/crr-site1 10.2.13.5:/crr-dest1\n"
    )


def test_the_comparison_takes_the_slowest_client_and_totals_over_all() -> None:
    seed = [
        client_figures(
            name="client1",
            first_write_s=None,
            writes_refused=40,
            writes_lost=3,
            rows_lost=1,
            hidden_files=7,
        ),
        client_figures(name="client2", first_write_s=61.0, writes_refused=12),
    ]
    ours = [
        client_figures(name="client1", first_write_s=8.0),
        client_figures(name="client2", first_write_s=9.5),
    ]

    rows = compare(seed, ours)

    first = rows["first write after the outage (s)"]
    assert first == {"seed": None, "nfs-failover": 9.5}  # a client that never wrote again
    assert rows["writes refused by a read-only replica (EROFS)"] == {"seed": 52, "nfs-failover": 0}
    assert rows["acknowledged writes lost or hidden"] == {"seed": 4, "nfs-failover": 0}
    assert rows["most owed files one listing missed"] == {"seed": 7, "nfs-failover": 0}


def test_the_terminal_summary_has_a_row_per_client_not_a_raw_list() -> None:
    from rich.console import Console

    from nfs_failover.cli import drill_cmd
    from nfs_failover.drill.model import DrillReport, Summary

    clients = [
        client_figures(name="client1", writes_acknowledged=27, writes_lost=0),
        client_figures(name="client2", database="malformed"),
    ]
    summary = Summary(passed=True, mode="read-write", grace_s=5.0)
    report = DrillReport(summary=summary, clients=clients)
    out = Console(width=200, record=True)
    drill_cmd.console, saved = out, drill_cmd.console
    try:
        drill_cmd._print_summary(report)
    finally:
        drill_cmd.console = saved
    text = out.export_text()

    assert "{'name'" not in text  # the clients are a table, not the summary's list
    rows = [line for line in text.splitlines() if re.match(r"│ client\d ", line)]
    assert [r.split()[1] for r in rows] == ["client1", "client2"]
    assert "27/0" in rows[0] and "malformed" in rows[1]
