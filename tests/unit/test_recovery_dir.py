"""A recovery directory is created whole, even when the flow is killed while creating it.

Found by `tests/e2e/test_crash_e2e.py`: a `kill -9` while Bytewax wrote the 64 partition files
left 49 of them, and every restart then failed with `MissingPartitionsError`.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from bytewax.recovery import init_db_dir

from flows.recovery_dir import MARKER, RecoveryDirError, prepare


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
    stamps = {p.name: p.stat().st_mtime_ns for p in db_dir.glob("part-*.sqlite3")}
    prepare(db_dir, 64)  # the partition count of an existing directory never changes
    assert {p.name: p.stat().st_mtime_ns for p in db_dir.glob("part-*.sqlite3")} == stamps
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
