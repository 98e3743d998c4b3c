"""The flow's Bytewax recovery directory: created whole, or not at all.

`bytewax.recovery.init_db_dir` writes one SQLite file per recovery partition, one after the
other (64 by default, about a second). A flow killed meanwhile left some of them, and every
restart then failed with Bytewax's `MissingPartitionsError`: a crash loop out of one unlucky
kill. `prepare` writes a `partitions.complete` marker once every file is there; a directory
with partition files but no marker is checked against the partition count recorded in its
files: complete (made before the marker existed) -> marked; incomplete and holding no
snapshot -> the interrupted initialisation is removed and done again; incomplete with
snapshots -> `RecoveryDirError`, never a silent reset.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bytewax.recovery import init_db_dir

MARKER = "partitions.complete"


class RecoveryDirError(RuntimeError):
    """The recovery directory is damaged in a way the flow must not repair by itself."""


def prepare(db_dir: Path, partitions: int) -> None:
    """Make `db_dir` a complete recovery directory of `partitions` partitions if it is new."""
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
