"""CPU of `flows.folding.build_write` alone, as the backfill calls it, two trees A/B, and a
check that both trees build the same writes.

    nice -n 19 .venv/bin/python bench/build_write_ab.py --a /tmp/base-worktree --b . \
        --log .oo/bench/slice.jsonl [--lines 200000] [--cuts 2] [--rounds 3]

Each round runs one child process per tree (A B, then B A, ...), with `PYTHONPATH=<tree>` and
the tree as working directory. A child decodes the first `--lines` lines of the log
(`connectors.records.decode_line`, untimed), folds them in order into one `UserState` per user
(`flows.folding.Pending.fold`, untimed), and at `--cuts` evenly spaced points (the last one at
the end) times, in CPU seconds (`time.process_time`, after `flows.runtime.tune_gc()`), one
`build_write` of every user folded since the cut before, with each user's write dedupe
(`Written`) kept from cut to cut: what the backfill's `_write_span` does before the store
write. It prints the CPU per write and a digest of every write's content (agents, versions,
parameter and extras text, snippets, times, parameter dicts): the digests of A and B must be
equal (the script exits 1 when they are not).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import hashlib, json, sys, time
from connectors.records import Accepted, decode_line
from connectors.store.base import dumps_compact
from features.state import UserState
from flows.folding import Pending, build_write
from flows.runtime import tune_gc

path, lines, cuts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
records = []
with open(path, "rb") as handle:
    for n, line in enumerate(handle, start=1):
        if n > lines:
            break
        record = decode_line(path, n, line, ingest_ms=1_700_000_000_000 + n, now_s=1_800_000_000)
        if isinstance(record, Accepted):
            records.append(record)
tune_gc()
states, written = {}, {}
digest = hashlib.sha256()
cpu = 0.0
writes = 0
step = -(-len(records) // cuts)
for start in range(0, len(records), step):
    per_user = {}
    for record in records[start : start + step]:
        per_user.setdefault(record.event.user_id, []).append(record)
    pending = {}
    for user_id, events in per_user.items():
        state = states.get(user_id)
        if state is None:
            state = states[user_id] = UserState(user_id)
            written[user_id] = {}
        p = pending[user_id] = Pending()
        p.fold(state, events)
    t0 = time.process_time()
    out = [build_write(states[u], p, computed_at_ms=1, written=written[u]) for u, p in pending.items()]
    cpu += time.process_time() - t0
    writes += len(out)
    for w in out:
        if w is None:
            continue
        digest.update(repr((w.user_id, sorted(w.removed_agents), w.feedback, w.consents,
                            w.deleted_at_ms, w.newest_event_ms, w.newest_ingest_ms)).encode())
        for aid, a in w.agents.items():
            digest.update(repr((aid, a.version, a.params_text(), a.extras_text(), a.snippet,
                                a.ttl_seconds, a.event_time_ms, a.ingest_time_ms,
                                a.computed_at_ms, dumps_compact(a.params),
                                dumps_compact(a.extras))).encode())
print(json.dumps({"us_per_write": 1e6 * cpu / writes, "writes": writes,
                  "digest": digest.hexdigest()}))
"""


def _run(tree: Path, log: Path, lines: int, cuts: int) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OO_")}
    env["PYTHONPATH"] = str(tree)
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(log.resolve()), str(lines), str(cuts)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"run of {tree} exited {done.returncode}:\n{done.stderr[-3000:]}")
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--a", type=Path, required=True, help="source tree A (before)")
    parser.add_argument("--b", type=Path, required=True, help="source tree B (after)")
    parser.add_argument("--log", type=Path, required=True, help="event log (JSONL)")
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--cuts", type=int, default=2, help="writes per user, at most")
    parser.add_argument("--rounds", type=int, default=3, help="runs per tree")
    args = parser.parse_args(argv)
    runs: dict[str, list[float]] = {"A": [], "B": []}
    ratios: list[float] = []
    digests: dict[str, set[object]] = {"A": set(), "B": set()}
    for r in range(args.rounds):
        order = ("A", "B") if r % 2 == 0 else ("B", "A")
        got = {}
        for name in order:
            res = _run(args.a if name == "A" else args.b, args.log, args.lines, args.cuts)
            got[name] = float(res["us_per_write"])  # type: ignore[arg-type]
            runs[name].append(got[name])
            digests[name].add(res["digest"])
        ratios.append(got["B"] / got["A"])
        print(
            f"round {r + 1}: A {got['A']:.1f} us/write, B {got['B']:.1f} us/write, "
            f"B/A {ratios[-1]:.3f} ({res['writes']:,} writes)",
            flush=True,
        )
    print(
        f"median: A {statistics.median(runs['A']):.1f} us/write, "
        f"B {statistics.median(runs['B']):.1f} us/write, B/A {statistics.median(ratios):.3f}"
    )
    same = digests["A"] == digests["B"] and len(digests["A"]) == 1
    print("writes identical in A and B" if same else f"WRITES DIFFER: {digests}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
