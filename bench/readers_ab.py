"""The one line reader (`jsonl.read_line`) against the code before it, interleaved.

Runs, in alternating order (ABBA...), a child process on each of two source trees (the
base commit, extracted with `git archive`, and this checkout) over the same generated
event log, and reports each measure's median and the ratio new/old:

- produce: `jsonl.read_events` (parse + validate, what `produce` does per line) and, with
  `--bootstrap`, the whole of `produce` (read_events + `EventProducer.publish` + flush);
- backfill: `records.decode_line` alone (the flows' reader) and `flows.backfill.backfill`
  into a fresh SQLite store (reader + fold + writes).

    nice -n 19 .venv/bin/python bench/readers_ab.py --base main --events 20000 --users 500 --rounds 4 \\
        [--bootstrap 127.0.0.1:9092]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time, uuid
from pathlib import Path
path, bootstrap, tmp = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
from connectors.jsonl import LineError, read_events
from connectors.records import Rejected, decode_line
from connectors.store import open_store
from flows.backfill import backfill
out = {}
lines = path.read_bytes().splitlines(keepends=True)
t = time.perf_counter()
bad = sum(isinstance(item, LineError) for _, item in read_events(lines))
out["read_events"] = time.perf_counter() - t
assert bad == 0, bad
t = time.perf_counter()
now = time.time()
for n, line in enumerate(lines, 1):
    if isinstance(decode_line("f", n, line, ingest_ms=0, now_s=now), Rejected):
        raise SystemExit(f"line {n} rejected")
out["decode_line"] = time.perf_counter() - t
store = open_store(f"sqlite:///{tmp / ('bf-' + uuid.uuid4().hex + '.db')}")
t = time.perf_counter()
report = backfill(path, store, rejects_path=tmp / "bf.rejects")
out["backfill"] = time.perf_counter() - t
store.close()
assert report.rejected == 0
if bootstrap:
    from connectors.kafka import EventProducer
    from oo_features.services import delete_topics
    prefix = f"bench-{uuid.uuid4().hex[:8]}-"
    producer = EventProducer(bootstrap=bootstrap, topic_prefix=prefix)
    t = time.perf_counter()
    with path.open("rb") as handle:
        for _, item in read_events(handle):
            producer.publish(item, validate=False)
    published = producer.flush().published
    out["produce"] = time.perf_counter() - t
    producer.close()
    delete_topics(bootstrap, prefix)
    assert published == len(lines), published
print(json.dumps(out))
"""


def tree_at(ref: str, into: Path) -> Path:
    """The source tree of `ref` (with this checkout's generated protobuf modules)."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    for generated in (ROOT / "proto").rglob("*_pb2.py"):
        target = into / generated.relative_to(ROOT)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(generated, target)
    return into


def micro(base: str, lines: list[bytes], rounds: int) -> None:
    """The two readers alone, old and new alternating in one process (CPU seconds)."""
    import importlib.util
    import time

    from connectors import jsonl, records

    def load(name: str, rel: str) -> object:
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{base}:{rel}"], check=True, capture_output=True
        ).stdout
        spec = importlib.util.spec_from_loader(name, loader=None)
        assert spec is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        exec(compile(source, rel, "exec"), module.__dict__)
        return module

    old_jsonl, old_records = (
        load("old_jsonl", "connectors/jsonl.py"),
        load("old_records", "connectors/records.py"),
    )
    now = time.time()

    def produce_reader(read_events: object) -> float:
        t = time.process_time()
        for _ in read_events(lines, now_s=now):  # type: ignore[operator]
            pass
        return time.process_time() - t

    def flow_reader(decode_line: object) -> float:
        t = time.process_time()
        for n, line in enumerate(lines, 1):
            decode_line("f", n, line, ingest_ms=0, now_s=now)  # type: ignore[operator]
        return time.process_time() - t

    sides = {
        "read_events": (old_jsonl.read_events, jsonl.read_events),  # type: ignore[attr-defined]
        "decode_line": (old_records.decode_line, records.decode_line),  # type: ignore[attr-defined]
    }
    runner = {"read_events": produce_reader, "decode_line": flow_reader}
    for measure, (old, new) in sides.items():
        olds: list[float] = []
        news: list[float] = []
        for round_no in range(rounds):
            pair = [(olds, old), (news, new)]
            for into, func in pair if round_no % 2 == 0 else pair[::-1]:
                into.append(runner[measure](func))
        ratios = sorted(n / o for n, o in zip(news, olds, strict=True))
        print(
            f"  {measure:<12} old {statistics.median(olds):6.3f}  new "
            f"{statistics.median(news):6.3f} CPU s  new/old median {statistics.median(ratios):.3f}"
            f"  (range {ratios[0]:.3f}-{ratios[-1]:.3f})"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--base", default="main", help="the commit to compare with")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5, help="runs of each side")
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--bootstrap", default="", help="Kafka, to measure all of produce")
    parser.add_argument("--micro", action="store_true", help="the readers alone, in-process")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from bench.produce import generate

    if args.micro:
        lines = [(line + "\n").encode() for line in generate(args.events, users=args.users)]
        print(f"{args.events:,} lines, {args.rounds} runs each, alternating:")
        micro(args.base, lines, args.rounds)
        return 0

    with tempfile.TemporaryDirectory(prefix="oo-readers-ab-") as tmp_name:
        tmp = Path(tmp_name)
        trees = {"old": tree_at(args.base, tmp / "old"), "new": ROOT}
        log = tmp / "events.jsonl"
        with log.open("w") as out:
            for line in generate(args.events, users=args.users):
                out.write(line + "\n")
        results: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
        for round_no in range(args.rounds):
            order = ["old", "new"] if round_no % 2 == 0 else ["new", "old"]
            for side in order:
                env = {**os.environ, "PYTHONPATH": str(trees[side])}
                done = subprocess.run(
                    [sys.executable, "-c", CHILD, str(log), args.bootstrap, tmp_name],
                    env=env,
                    cwd=trees[side],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                results[side].append(json.loads(done.stdout.splitlines()[-1]))
                print(side, results[side][-1], flush=True)
        print(f"\n{args.events:,} events, {args.rounds} runs each, medians (s) and new/old:")
        for measure in results["new"][0]:
            old = statistics.median(r[measure] for r in results["old"])
            new = statistics.median(r[measure] for r in results["new"])
            ratios = [
                n[measure] / o[measure] for n, o in zip(results["new"], results["old"], strict=True)
            ]
            print(
                f"  {measure:<12} old {old:6.2f}  new {new:6.2f}  new/old {new / old:5.3f}  "
                f"(per-round ratios {', '.join(f'{r:.3f}' for r in ratios)})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
