"""A recovery directory is created whole, even when the flow is killed while creating it.

Found by `tests/e2e/test_crash_e2e.py`: a `kill -9` while Bytewax wrote the 64 partition files
left 49 of them, and every restart then failed with `MissingPartitionsError`.
"""

from __future__ import annotations

import importlib.util
import sqlite3
from contextlib import closing
from pathlib import Path

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main

from flows.recovery_dir import (
    MARKER,
    SNAPS_INDEX,
    SNAPS_STAT,
    RecoveryDirError,
    prepare,
    steer_resume_query,
)


def _interrupted(db_dir: Path, parts: int, left: int) -> None:
    """What a kill during `init_db_dir` leaves: the first `left` of `parts` files."""
    db_dir.mkdir()
    init_db_dir(db_dir, parts)
    for path in sorted(db_dir.glob("part-*.sqlite3"), key=lambda p: int(p.stem.split("-")[1])):
        if int(path.stem.split("-")[1]) >= left:
            path.unlink()


def test_an_interrupted_initialisation_is_done_again(tmp_path: Path) -> None:
    db_dir = tmp_path / "recovery"
    _interrupted(db_dir, 8, left=5)
    prepare(db_dir, 8)
    assert len(list(db_dir.glob("part-*.sqlite3"))) == 8 and (db_dir / MARKER).exists()


def test_a_complete_directory_from_before_the_marker_is_kept(tmp_path: Path) -> None:
    db_dir = tmp_path / "recovery"
    db_dir.mkdir()
    init_db_dir(db_dir, 4)
    files = {p.name: p.stat().st_ino for p in db_dir.glob("part-*.sqlite3")}
    prepare(db_dir, 64)  # the partition count of an existing directory never changes
    # The same files (not made again); only the planner statistic is added (ADR 0024).
    assert {p.name: p.stat().st_ino for p in db_dir.glob("part-*.sqlite3")} == files
    assert (db_dir / MARKER).exists()


def test_missing_partitions_with_snapshots_are_refused_not_reset(tmp_path: Path) -> None:
    db_dir = tmp_path / "recovery"
    _interrupted(db_dir, 4, left=3)
    with sqlite3.connect(db_dir / "part-0.sqlite3") as conn:
        conn.execute(
            "INSERT INTO snaps (step_id, state_key, snap_epoch, ser_change) "
            "VALUES ('s', 'k', 1, x'00')"
        )
    with pytest.raises(RecoveryDirError, match="3 of 4 partition files"):
        prepare(db_dir, 4)
    assert len(list(db_dir.glob("part-*.sqlite3"))) == 3


def test_a_new_directory_is_created_and_marked(tmp_path: Path) -> None:
    db_dir = tmp_path / "new" / "recovery"
    prepare(db_dir, 3)
    assert len(list(db_dir.glob("part-*.sqlite3"))) == 3 and (db_dir / MARKER).exists()


# --- ADR 0024: Bytewax's resume query walks the snapshot key instead of sorting ---------------


def _bytewax_query(start: bytes, end: bytes) -> str:
    """A query of the installed Bytewax, read from its binary (so an upgrade that changes it
    fails here, not silently in production)."""
    spec = importlib.util.find_spec("bytewax._bytewax")
    assert spec is not None and spec.origin is not None
    data = Path(spec.origin).read_bytes()
    begin = data.find(start)
    assert begin >= 0, f"Bytewax's query starting {start!r} is gone: re-measure ADR 0024"
    return data[begin : data.index(end, begin) + len(end)].decode()


LOADER = (b"WITH max_epoch_snaps AS (", b"LIMIT ?4")
"""`SerializedSnapshotLoader::select`: one page of the newest snapshot per key."""


def _snapshots(path: Path, keys: int, epochs: int = 1) -> None:
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.executemany(
            "INSERT INTO snaps (step_id, state_key, snap_epoch, ser_change) VALUES (?, ?, ?, ?)",
            [
                ("s", f"k{k:05d}", epoch, f"{k}@{epoch}".encode() * 100)
                for k in range(keys)
                for epoch in range(1, epochs + 1)
                if (k + epoch) % 3 or epoch == 1  # some keys have fewer epochs than others
            ],
        )


def _plan(path: Path) -> list[str]:
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute(f"EXPLAIN QUERY PLAN {_bytewax_query(*LOADER)}", (9, "s", "k", 1000))
        return [row[3] for row in rows]


def _pages(path: Path, before: int) -> list[tuple[str, str, int, bytes]]:
    """Every row the loader returns, page by page, as Bytewax pages it."""
    out: list[tuple[str, str, int, bytes]] = []
    cursor: tuple[str | None, str | None] = (None, None)
    with closing(sqlite3.connect(path)) as conn:
        while page := conn.execute(_bytewax_query(*LOADER), (before, *cursor, 1000)).fetchall():
            out.extend(page)
            cursor = (page[-1][0], page[-1][1])
    return out


def test_the_resume_query_walks_the_snapshot_key_instead_of_sorting(tmp_path: Path) -> None:
    db_dir = tmp_path / "recovery"
    prepare(db_dir, 2)
    for path in db_dir.glob("part-*.sqlite3"):
        _snapshots(path, 50)
        plan = _plan(path)
        assert not any("TEMP B-TREE FOR ORDER BY" in step for step in plan), plan
        assert any(step.startswith("SCAN snaps USING INDEX") for step in plan), plan


def test_a_directory_of_an_older_flow_is_steered_at_its_next_start(tmp_path: Path) -> None:
    db_dir = tmp_path / "recovery"
    db_dir.mkdir()
    init_db_dir(db_dir, 2)  # what an older flow made: no statistics
    (db_dir / MARKER).touch()
    path = db_dir / "part-0.sqlite3"
    _snapshots(path, 50)
    assert any("TEMP B-TREE FOR ORDER BY" in step for step in _plan(path))
    prepare(db_dir, 2)
    prepare(db_dir, 2)  # idempotent
    with closing(sqlite3.connect(path)) as conn:
        stats = conn.execute("SELECT tbl, idx, stat FROM sqlite_stat1").fetchall()
    assert stats == [("snaps", SNAPS_INDEX, SNAPS_STAT)]
    assert not any("TEMP B-TREE FOR ORDER BY" in step for step in _plan(path))


def test_the_steered_query_returns_the_same_snapshots(tmp_path: Path) -> None:
    """Statistics change the plan, never the rows: every key once, its newest snapshot before
    the resume epoch, across pages (2,500 keys: three pages), the same with and without."""
    plain, steered = tmp_path / "plain", tmp_path / "steered"
    for db_dir in (plain, steered):
        db_dir.mkdir()
        init_db_dir(db_dir, 1)
        _snapshots(db_dir / "part-0.sqlite3", 2500, epochs=4)
    steer_resume_query(steered)
    for before in (2, 4, 5):
        rows = _pages(steered / "part-0.sqlite3", before)
        assert rows == _pages(plain / "part-0.sqlite3", before)
        assert [key for _, key, _, _ in rows] == [f"k{k:05d}" for k in range(2500)]
        assert all(epoch < before for _, _, epoch, _ in rows)


def _counting_flow(items: list[tuple[str, int]], out: list[tuple[str, int]]) -> Dataflow:
    flow = Dataflow("steered")
    keyed = op.input("inp", flow, TestingSource(items))

    def count(seen: int | None, _value: int) -> tuple[int, int]:
        return (seen or 0) + 1, (seen or 0) + 1

    op.output("out", op.stateful_map("count", keyed, count), TestingSink(out))
    return flow


def test_bytewax_resumes_every_key_from_a_steered_directory(tmp_path: Path) -> None:
    """Through Bytewax's own SQLite: 2,500 keys in one partition (three pages of its loader)
    come back once each with their snapshot after the planner statistic is in place."""
    db_dir = tmp_path / "recovery"
    prepare(db_dir, 1)
    keys = [f"k{k:05d}" for k in range(2500)]
    first = [(key, 1) for key in keys]
    out: list[tuple[str, int]] = []
    run_main(_counting_flow(first, out), recovery_config=RecoveryConfig(db_dir))
    assert sorted(out) == [(key, 1) for key in keys]
    prepare(db_dir, 1)  # what the next start does
    out.clear()
    run_main(
        _counting_flow(first + [(key, 2) for key in keys], out),
        recovery_config=RecoveryConfig(db_dir),
    )
    assert sorted(out) == [(key, 2) for key in keys]  # each key's count resumed, none twice


def test_a_file_that_is_not_a_partition_is_named(tmp_path: Path) -> None:
    db_dir = tmp_path / "recovery"
    prepare(db_dir, 2)
    (db_dir / "part-1.sqlite3").write_bytes(b"not a database" * 100)
    with pytest.raises(RecoveryDirError, match=r"part-1\.sqlite3.*snaps table"):
        prepare(db_dir, 2)
