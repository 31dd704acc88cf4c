"""The per-client figures and verification, from records, against real files and databases."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from nfs_failover.drill import figures
from nfs_failover.drill.guests import Hang, MountChange, Op, Records
from nfs_failover.lab import guest_workload as gw

P = "drill-x-client1-"
SITE1, DEST1 = "198.18.1.5:/crr-site1", "198.18.2.5:/crr-dest1"
NAMES = {SITE1: "site1", DEST1: "dest1"}
AT = figures.Instants(t0=0.0, outage=100.0, restore=130.0, failback=140.0)


def op(
    kind: str,
    begin: float,
    server: str,
    seq: int | None = None,
    *,
    ok: bool = True,
    end: float | None = None,
    **seen: object,
) -> Op:
    app = {"write": "writer", "version": "writer", "row": "sqlite"}.get(kind, "reader")
    return Op(
        "client1",
        app,
        kind,
        seq,
        begin,
        begin + 0.1 if end is None else end,
        ok,
        server,
        None if ok else "EIO",
        dict(seen),
    )


def volume(tmp_path: Path, preserved: dict[str, list[Path]] | None = None) -> figures.Volume:
    final = tmp_path / "final"
    final.mkdir(exist_ok=True)
    return figures.Volume(NAMES, SITE1, DEST1, final, preserved or {})


def written(folder: Path, *seqs: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for seq in seqs:
        (folder / gw.file_name(P, seq)).write_bytes(gw.content(P, seq))


def database(folder: Path, *seqs: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / gw.database_name(P)
    with sqlite3.connect(path) as db:
        db.execute("create table rows(seq integer primary key, value text)")
        db.executemany("insert into rows values(?, 'v')", [(s,) for s in seqs])
    db.close()
    return path


def figures_of(ops: list[Op], view: figures.Volume, **records: object) -> figures.ClientFigures:
    return figures.client_figures(
        "client1",
        Records(ops=ops, **records),  # type: ignore[arg-type]
        AT,
        view,
        prefix=P,
        read_only=False,
    )


def test_the_rto_runs_from_the_outage_to_the_first_acknowledged_write_on_zone_2(
    tmp_path: Path,
) -> None:
    view = volume(tmp_path)
    written(view.final, 1, 2, 3)
    ops = [
        op("write", 99.0, SITE1, 1),
        op("write", 101.0, SITE1, 2, ok=False, end=None),
        op("write", 108.0, DEST1, 2, end=108.4),
        op("write", 109.0, DEST1, 3),
    ]
    hang = Hang("client1", "writer", since=101.0, killed=104.0)
    mounts = [
        MountChange("client1", 50.0, SITE1),
        MountChange("client1", 106.0, None),
        MountChange("client1", 107.5, DEST1),
    ]

    got = figures_of(ops, view, hangs=[hang], mounts=mounts)

    assert got.rto_s == 8.4
    assert got.write_blocked_s == round(108.4 - 99.1, 3)
    assert (got.hung_processes, got.hung_longest_s) == (1, 3.0)
    assert [m["replica"] for m in got.mounts] == ["site1", None, "dest1"]
    assert (got.writes_acknowledged, got.writes_lost) == (3, 0)


def test_a_write_is_owed_on_the_final_source_or_in_any_preserved_copy(tmp_path: Path) -> None:
    """One name may be preserved twice (the old source's copy and the late writes'): the
    acknowledged content may be in either."""
    old, late = tmp_path / "preserved" / "old-source", tmp_path / "preserved" / "late-writes"
    written(old, 2)
    late.mkdir(parents=True)
    (late / gw.file_name(P, 2)).write_bytes(b"something else")
    name = gw.file_name(P, 2)
    view = volume(tmp_path, {name: [old / name, late / name]})
    written(view.final, 1)
    ops = [op("write", 1.0, SITE1, 1), op("write", 2.0, SITE1, 2), op("write", 3.0, SITE1, 3)]

    got = figures_of(ops, view)

    assert (got.writes_acknowledged, got.writes_preserved, got.writes_lost) == (3, 1, 1)
    assert got.lost == (gw.file_name(P, 3),)


def test_committed_rows_are_looked_for_in_the_final_and_every_preserved_database(
    tmp_path: Path,
) -> None:
    view_final = tmp_path / "final"
    database(view_final, 1, 2, 5)
    kept = database(tmp_path / "preserved" / "old-source", 1, 2, 3)
    view = volume(tmp_path, {gw.database_name(P): [kept]})
    ops = [op("row", float(seq), SITE1 if seq < 4 else DEST1, seq) for seq in (1, 2, 3, 4, 5)]

    got = figures_of(ops, view)

    assert (got.rows_acknowledged, got.rows_preserved, got.rows_lost) == (5, 1, 1)
    assert got.database == "ok" and got.lost == ("row 4",)


def test_a_torn_database_says_so(tmp_path: Path) -> None:
    path = database(tmp_path / "final", 1)
    data = bytearray(path.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # the schema page overwritten
    path.write_bytes(bytes(data))

    got = figures_of([op("row", 1.0, SITE1, 1)], volume(tmp_path))

    assert got.database != "ok" and got.rows_lost == 1


def test_a_read_on_zone_2_need_not_see_zone_1s_last_writes_but_one_back_on_zone_1_must(
    tmp_path: Path,
) -> None:
    """The RPO window: writes acknowledged on zone 1 after its last transfer are not on
    zone 2, and that is no stale read; once back on zone 1 everything acknowledged
    anywhere (but what the failback preserved) must be seen."""
    view = volume(tmp_path)
    ops = [
        op("write", 1.0, SITE1, 1),
        op("write", 2.0, SITE1, 2),
        op("read", 110.0, DEST1, seqs=[[1, 1]]),  # 2 never reached zone 2: the RPO window
        op("write", 111.0, DEST1, 3),
        op("version", 111.2, DEST1, 3),
        op("read", 112.0, DEST1, seqs=[[1, 1]], version=2),  # misses 3, written right here
        op("read", 150.0, SITE1, seqs=[[1, 1], [3, 3]], version=3),  # misses 2
        op("read", 151.0, SITE1, seqs=[[1, 3]], version=3),
    ]

    got = figures_of(ops, view)

    assert (got.stale_reads, got.hidden_files) == (2, 1)
    preserved = volume(tmp_path, {gw.file_name(P, 2): [tmp_path / "x"]})
    assert figures_of(ops, preserved).stale_reads == 1  # 2 was preserved: not owed on zone 1


def test_only_a_file_acknowledged_before_the_read_can_read_corrupt(tmp_path: Path) -> None:
    ops = [
        op("write", 1.0, SITE1, 1, end=1.5),
        op("read", 1.2, SITE1, seqs=[[1, 1]], checked=1, intact=False),  # still being written
        op("read", 2.0, SITE1, seqs=[[1, 1]], checked=1, intact=False),
        op("read", 3.0, SITE1, seqs=[[1, 1]], checked=1, intact=True),
    ]

    assert figures_of(ops, volume(tmp_path)).corrupt_reads == 1
