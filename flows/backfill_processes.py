"""`backfill --processes N`: one backfill split by user across N processes.

Each process reads the whole file, keeps the lines of its users (`flows.backfill.line_owner`,
crc32 of the user id, read from the line's bytes; lines that do not say are decoded by
every process and kept by the one owning the decoded user, or as rejects by process 0), folds
them exactly as one process would and writes to the same store. A user's events all go to
one process and are folded in file order, and the store keeps each user's last write, so N
processes give the store one process gives (tested key by key). Rejects of every process are
merged into one file in line order.

Cost (ADR 0023): reading every line in every process costs a regex on its bytes, nothing
measurable against decoding; the processes share one SQLite file's writer lock only when they
write, once per 500 users at the end of each span, and process i's spans end i/N of a span
after process 0's, so they rarely ask for it at once (ADR 0029); with few lines per user the
only span is the whole file (ADR 0038) and they take the lock in turn, one chunk each. N
processes do the CPU work of one split N ways, plus each reading every line's bytes (a regex:
about 1.3 us a line, ADR 0038) (BENCHMARKS.md, "Backfill in spans").

`oo-features backfill` runs one process this way too (`processes=1`: no partition, every line
folded as by `flows.backfill.backfill`): the forked child exits without freeing the run's
states, about 7 % of one process's CPU on issue 13's log (ADR 0051).

Processes are forked (the caller must hold no open store connection or running threads:
`oo-features backfill` closes its store first). Failure behaviour: a process that fails (store unreachable, a crash) makes the whole run
fail with its error; what the others wrote stays (a re-run writes it again, idempotently).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import multiprocessing as mp
import queue
from collections.abc import Callable
from pathlib import Path
from typing import Any

from connectors.jsonl import rejects_path_for
from flows.backfill import BackfillReport, backfill


class BackfillProcessError(RuntimeError):
    """One of the backfill processes failed (the message names it and says why)."""


def _child(
    path: str,
    store_url: str,
    key_prefix: str,
    index: int,
    processes: int,
    rejects_path: str,
    lines_done: Any,
    results: Any,
) -> None:
    from connectors.store import open_store
    from flows.runtime import tune_gc

    tune_gc()
    # The collector stays off after the backfill (it turns it off for its run), and the run's
    # structures are kept: this process exits right after its report (os._exit: nothing is
    # freed), so neither a collection nor freeing them is worth its time (ADR 0047).
    gc.disable()
    kept: list[object] = []
    try:
        store = open_store(store_url, key_prefix=key_prefix)
        try:

            def advance(n: int) -> None:
                if index == 0:
                    with lines_done.get_lock():
                        lines_done.value += n

            report = backfill(
                path,
                store,
                rejects_path=rejects_path,
                progress=advance,
                partition=(index, processes) if processes > 1 else None,
                keep=kept,
            )
        finally:
            store.close()
        results.put((index, None, dataclasses.asdict(report)))
    except BaseException as exc:  # reported to the parent, which fails the run
        results.put((index, f"{type(exc).__name__}: {exc}", None))


def backfill_processes(
    path: str | Path,
    store_url: str,
    *,
    key_prefix: str,
    processes: int,
    rejects_path: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> BackfillReport:
    """`backfill` of `path` into the store at `store_url` by `processes` processes."""
    if processes < 1:
        raise ValueError(f"processes must be >= 1; got {processes}")
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(
            f"event log {source} "
            + ("is a directory, not a file" if source.is_dir() else "does not exist")
        )
    rejects = rejects_path_for(source, rejects_path)
    parts = [rejects.with_name(f"{rejects.name}.part{i}") for i in range(processes)]
    # Fork: the children start with every module imported (spawn re-imports them, seconds per
    # process). The caller closes its store first; children open their own connections.
    ctx = mp.get_context("fork")
    lines_done = ctx.Value("q", 0)
    results = ctx.Queue()
    children = [
        ctx.Process(
            target=_child,
            args=(
                str(source),
                store_url,
                key_prefix,
                i,
                processes,
                str(parts[i]),
                lines_done,
                results,
            ),
            name=f"backfill-{i}",
        )
        for i in range(processes)
    ]
    for child in children:
        child.start()
    got: dict[int, dict[str, int]] = {}
    errors: list[str] = []
    reported = 0
    while len(got) + len(errors) < processes:
        try:
            index, error, fields = results.get(timeout=0.5)
        except queue.Empty:
            if all(not c.is_alive() for c in children) and results.empty():
                dead = [c.name for c in children if c.exitcode not in (0, None)]
                errors.append(f"processes {dead or 'unknown'} exited without a report")
                break
        else:
            if error is not None:
                errors.append(f"backfill process {index} of {processes}: {error}")
            else:
                got[index] = fields
        if progress is not None and lines_done.value > reported:
            progress(lines_done.value - reported)
            reported = lines_done.value
    for child in children:
        child.join()
    if errors:
        raise BackfillProcessError("; ".join(errors))
    if progress is not None and lines_done.value > reported:
        progress(lines_done.value - reported)
    _merge_rejects(parts, rejects)
    total = BackfillReport()
    for fields in got.values():
        total.accepted += fields["accepted"]
        total.rejected += fields["rejected"]
        total.users += fields["users"]
        total.writes += fields["writes"]
        total.lines = max(total.lines, fields["lines"])
    return total


def _merge_rejects(parts: list[Path], rejects: Path) -> None:
    lines: list[tuple[int, str]] = []
    for part in parts:
        if part.exists():
            for line in part.read_text(encoding="utf-8").splitlines():
                lines.append((json.loads(line)["line"], line))
            part.unlink()
    lines.sort(key=lambda item: item[0])
    rejects.write_text("".join(line + "\n" for _, line in lines), encoding="utf-8")
