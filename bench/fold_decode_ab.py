"""The backfill's per-event CPU split into decode and fold, for two source trees, interleaved.

Each round runs, per tree (A B B A ...), a child process with the tree first on `PYTHONPATH`
that reads the log's first `--lines` lines in the backfill's batches and times, in CPU
seconds (`time.process_time`, the cyclic collector off as the backfill runs), per batch:

  decode  `line_fast.fast_line` of every line and its `Accepted`, grouped per user
  fold    `UserState.apply` of each user's events of the batch, in file order
  free    dropping the batch's decoded events
  loop    `flows.backfill.backfill` of the same lines with the span writes left out and the
          states kept (as a `--processes` child runs it): decode, grouping and `Pending.fold`

and prints CPU us an event per part, then the medians per tree and B/A per round:

    .venv/bin/python bench/fold_decode_ab.py --a /path/to/base-tree --b . \
        --log .oo/bench/backfill-50000u-5d-20261203-2000000.jsonl --lines 400000 --rounds 3
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("decode", "fold", "free", "loop")


def child(log: Path) -> dict[str, float]:
    """The CPU seconds of each part over `log` in the tree on `sys.path`."""
    from connectors import line_fast

    # A tree with plain events (ADR 0054) decodes for the fold as its backfill does.
    plain = getattr(line_fast, "fast_line_plain", None)
    fast_line = line_fast.fast_line
    from connectors.records import Accepted, decode_line
    from features.state import UserState
    from flows import backfill as bf

    gc.disable()
    clock = time.process_time
    spent = dict.fromkeys(PARTS, 0.0)
    states: dict[str, UserState] = {}
    name = str(log)
    events = 0
    for first, batch in bf._batches(log):
        now_s = time.time()
        ingest_ms = int(now_s * 1000)
        t0 = clock()
        per_user: dict[str, list[Accepted]] = {}
        for line_no, line in enumerate(batch, first):
            got = plain(line, now_s) if plain is not None else fast_line(line, now_s, True)
            if got is not None:
                record = Accepted(got[0], ingest_ms, got[1], got[2], (name, line_no, line))
            else:  # the slow path, as the backfill takes it
                decoded = decode_line(name, line_no, line, ingest_ms=ingest_ms, now_s=now_s)
                if decoded is None or decoded.__class__ is not Accepted:
                    continue
                record = decoded  # type: ignore[assignment]
            per_user.setdefault(record.event.user_id, []).append(record)
        t1 = clock()
        for user_id, records in per_user.items():
            state = states.get(user_id)
            if state is None:
                state = states[user_id] = UserState(user_id)
            apply = state.apply
            for record in records:
                apply(record)
            events += len(records)
        t2 = clock()
        del per_user, records
        t3 = clock()
        spent["decode"] += t1 - t0
        spent["fold"] += t2 - t1
        spent["free"] += t3 - t2
    kept: list[object] = [states]
    saved = bf._write_span
    bf._write_span = lambda *args: 0  # type: ignore[assignment]
    try:
        t0 = clock()
        store: Any = _Null()
        report = bf.backfill(log, store, rejects_path=log.with_suffix(".rejects"), keep=kept)
        spent["loop"] = clock() - t0
    finally:
        bf._write_span = saved
    assert report.accepted == events, (report.accepted, events)
    return {"events": events, **spent}


class _Null:
    def write_batch(self, writes: object, *, now_ms: int | None = None) -> list[str]:
        return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--a", type=Path, help="source tree A (before)")
    parser.add_argument("--b", type=Path, help="source tree B (after)")
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--lines", type=int, default=400_000)
    parser.add_argument("--rounds", type=int, default=3, help="runs per tree")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.log)))
        return 0
    sys.path.insert(0, str(ROOT))
    from bench.tree_child import run_in_tree

    trees = {"A": args.a.resolve(), "B": args.b.resolve()}
    with tempfile.TemporaryDirectory(prefix="bench-fold-decode-") as work:
        log = Path(work) / "events.jsonl"
        with args.log.open("rb") as src, log.open("wb") as out:
            out.writelines(islice(src, args.lines))
        us: dict[str, dict[str, list[float]]] = {t: {p: [] for p in PARTS} for t in trees}
        for i in range(args.rounds):
            for tree in ("A", "B") if i % 2 == 0 else ("B", "A"):
                got = run_in_tree(__file__, trees[tree], ["--child", "--log", str(log)])
                for part in PARTS:
                    us[tree][part].append(1e6 * got[part] / got["events"])
                shown = "  ".join(f"{p} {us[tree][p][-1]:5.2f}" for p in PARTS)
                print(f"round {i} {tree}: {shown} us an event", flush=True)
    print(f"\nmedians over {args.rounds} rounds, CPU us an event (B/A per round):")
    for part in PARTS:
        a, b = us["A"][part], us["B"][part]
        ratios = ", ".join(f"{y / x:.3f}" for x, y in zip(a, b, strict=True))
        print(
            f"  {part:<6} A {statistics.median(a):6.2f}  B {statistics.median(b):6.2f}  "
            f"B/A {statistics.median(b) / statistics.median(a):.3f} ({ratios})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
