"""The flow's Bytewax recovery directory: created whole, or not at all.

`bytewax.recovery.init_db_dir` writes one SQLite file per recovery partition, one after the
other (64 by default, about a second). A flow killed meanwhile left some of them, and every
restart then failed with Bytewax's `MissingPartitionsError`: a crash loop out of one unlucky
kill. `prepare` writes a `partitions.complete` marker once every file is there; a directory
with partition files but no marker is checked against the partition count recorded in its
files: complete (made before the marker existed) -> marked; incomplete and holding no
snapshot -> the interrupted initialisation is removed and done again; incomplete with
snapshots -> `RecoveryDirError`, never a silent reset.

`prepare` also steers Bytewax's resume query (ADR 0024): Bytewax loads a partition's
snapshots in pages of 1,000 with a query SQLite plans, without statistics, as "join, then sort
the whole partition, blobs included, in a temporary B-tree" for every page, so a resume sorted
the recovery state many times over (ADR 0007, BENCHMARKS.md "Resume"). A planner statistic
(`sqlite_stat1`) for the snapshot table's primary key makes SQLite walk that key in order
instead: each page then reads only its own snapshots and nothing is sorted. Statistics change
plans, never results: the rows each query returns are the same.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from bytewax.recovery import init_db_dir

MARKER = "partitions.complete"
SNAPS_INDEX = "sqlite_autoindex_snaps_1"
"""SQLite's index of Bytewax's `snaps` primary key (step_id, state_key, snap_epoch)."""
SNAPS_STAT = "10 10 10 10"
"""The statistic that steers the planner (ADR 0024): "a small table with several snapshots per
key". With it, SQLite answers Bytewax's paged resume query by walking the primary key in
order (no temporary B-tree for ORDER BY); with none, or with the true counts, it sorts the
whole partition for each page of 1,000 snapshots."""


class RecoveryDirError(RuntimeError):
    """The recovery directory is damaged in a way the flow must not repair by itself."""


def prepare(db_dir: Path, partitions: int) -> None:
    """Make `db_dir` a complete recovery directory of `partitions` partitions if it is new,
    and steer Bytewax's resume query in every partition (`steer_resume_query`).

    Raises `RecoveryDirError` when partition files are missing and snapshots exist."""
    _complete(db_dir, partitions)
    steer_resume_query(db_dir)


def _complete(db_dir: Path, partitions: int) -> None:
    db_dir.mkdir(parents=True, exist_ok=True)
    marker = db_dir / MARKER
    if marker.exists():
        return
    files = sorted(db_dir.glob("part-*.sqlite3"))
    if files:
        expected = _recorded_count(files)
        if expected is not None and len(files) >= expected:
            marker.touch()  # a complete directory from before the marker
            return
        if any(_has_snapshots(path) for path in files):
            raise RecoveryDirError(
                f"recovery directory {db_dir}: {len(files)} of {expected} partition files, "
                "with snapshots in them; restore it from a backup or remove it to start over"
            )
        for path in files:  # an initialisation that was interrupted: nothing ran on it
            path.unlink()
    init_db_dir(db_dir, partitions)
    marker.touch()


def steer_resume_query(db_dir: Path) -> None:
    """Give every partition of `db_dir` the planner statistic `SNAPS_STAT` (idempotent).

    Call it before Bytewax opens the partitions (SQLite reads statistics when a connection
    loads the schema). A directory made by an older flow gets it at its next start; a
    partition that has it already is only read (the processes of a cluster share the
    directory). Killed midway, some partitions have it and some not: only their resume speed
    differs. A file that is not a Bytewax partition, or stays locked for 30 s, raises
    `RecoveryDirError` naming it.
    """
    for path in sorted(db_dir.glob("part-*.sqlite3")):
        try:
            with closing(sqlite3.connect(path, timeout=30)) as conn, conn:
                if _has_stat(conn):
                    continue
                conn.execute("ANALYZE sqlite_schema")  # creates sqlite_stat1, analyses nothing
                conn.execute("DELETE FROM sqlite_stat1 WHERE tbl = 'snaps'")
                conn.execute(
                    "INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES ('snaps', ?, ?)",
                    (SNAPS_INDEX, SNAPS_STAT),
                )
        except sqlite3.Error as exc:
            raise RecoveryDirError(
                f"recovery partition {path}: cannot add the resume planner statistic "
                f"(expected a Bytewax recovery partition with a snaps table): {exc}"
            ) from exc


def _has_stat(conn: sqlite3.Connection) -> bool:
    conn.execute("SELECT 1 FROM snaps LIMIT 1")  # not a Bytewax partition: sqlite3.Error
    try:
        row = conn.execute(
            "SELECT stat FROM sqlite_stat1 WHERE tbl = 'snaps' AND idx = ?", (SNAPS_INDEX,)
        ).fetchone()
    except sqlite3.OperationalError:  # no sqlite_stat1 yet
        return False
    return row is not None and row[0] == SNAPS_STAT


def _recorded_count(files: list[Path]) -> int | None:
    for path in files:
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
                row = conn.execute("SELECT MAX(part_count) FROM parts").fetchone()
        except sqlite3.Error:
            continue
        if row and row[0]:
            return int(row[0])
    return None


def _has_snapshots(path: Path) -> bool:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            return conn.execute("SELECT 1 FROM snaps LIMIT 1").fetchone() is not None
    except sqlite3.Error:
        return False
