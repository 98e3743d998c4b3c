"""The one progress bar of the CLI (rich), for every long job: `backfill`, `produce`, the demo.

`progress_bar(label, total, ...)` yields a `Bar` with `advance(n)` and `update(completed)`;
shown only when asked (default: when stderr is a terminal), otherwise every call is a no-op
and nothing is printed. `total` may be None (unknown): the bar then only counts. Drawing never
fails the job: the bar is cosmetic.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def count_lines(path: str | Path) -> int | None:
    """Lines of a file (newlines counted in 1 MiB chunks); None when it cannot be read."""
    try:
        with open(path, "rb") as handle:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    except OSError:
        return None


class Bar:
    """One drawn bar (or, when `shown` is False, one that draws nothing)."""

    def __init__(self, progress: Any = None, task: Any = None) -> None:
        self._progress, self._task = progress, task
        self.shown = progress is not None

    def advance(self, n: float = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def update(self, completed: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=completed)


@contextmanager
def progress_bar(
    label: str,
    total: float | None,
    *,
    show: bool | None = None,
    unit: str = "items",
    transient: bool = False,
    console: Any = None,
) -> Iterator[Bar]:
    """A bar over `total` `unit`s ("items" or "bytes") on stderr (or `console`)."""
    if show is None:
        show = sys.stderr.isatty()
    if not show:
        yield Bar()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    count = DownloadColumn() if unit == "bytes" else MofNCompleteColumn()
    with Progress(
        f"[bold]{label}[/bold]",
        BarColumn(),
        count,
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        transient=transient,
    ) as progress:
        yield Bar(progress, progress.add_task(label, total=total))


@contextmanager
def line_progress(path: str | Path, label: str) -> Iterator[Callable[[int], None]]:
    """`advance(n)` of a bar over the lines of the file at `path` (drawn on a terminal)."""
    with progress_bar(label, count_lines(path)) as bar:
        yield bar.advance
