"""CPU per event-log line of the line reader, this checkout against a base commit, interleaved.

Loads the base commit's `connectors/codec.py`, `jsonl.py` and `records.py` (from git) beside
this checkout's, in one process, and runs each side's reader over the same lines in
alternating order (ABBA...), `--rounds` times each, measuring process CPU time
(`time.process_time`): `records.decode_line` (what `backfill`, `flow --from` and
`training-set` call per line) and, with `--read-events`, `jsonl.read_events` (`produce`).
Prints each round, then the medians in µs per line and the median of the paired new/old
ratios. Before timing, it checks that both sides give the same outcome for every line (the
same Event, kind and time, or the same reason), and stops if one differs.

The log is a generator log (`oo-features generate --users 2000 --days 30 --out-of-order 0.05
--duplicates 0.02`, written once under .oo/bench/), or `--file`.

    nice -n 19 .venv/bin/python bench/decode.py --base 08e11c2 --lines 200000 --rounds 6
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def base_module(base: str, name: str, rel: str) -> ModuleType:
    """`rel` as it was at `base`, loaded as module `name` (its imports resolve to this checkout)."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{base}:{rel}"], check=True, capture_output=True
    ).stdout
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    exec(compile(source, rel, "exec"), module.__dict__)
    return module


def base_readers(base: str) -> tuple[ModuleType, ModuleType]:
    """The base's `jsonl` and `records`, wired to the base's `codec` and to each other."""
    codec = base_module(base, "base_codec", "connectors/codec.py")
    jsonl = base_module(base, "base_jsonl", "connectors/jsonl.py")
    jsonl.codec = codec  # type: ignore[attr-defined]
    records = base_module(base, "base_records", "connectors/records.py")
    records.read_line = jsonl.read_line  # type: ignore[attr-defined]
    records.without_bom = jsonl.without_bom  # type: ignore[attr-defined]
    return jsonl, records


def log_lines(path: Path | None, limit: int) -> list[bytes]:
    if path is None:
        path = ROOT / ".oo/bench/decode-2000u-30d.jsonl"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [str(Path(sys.executable).with_name("oo-features")), "generate", "--users",
                 "2000", "--days", "30", "--out-of-order", "0.05", "--duplicates", "0.02",
                 "--out", str(path)],
                check=True,
            )  # fmt: skip
    lines = path.read_bytes().splitlines(keepends=True)
    return lines[:limit] if limit else lines


def outcome(record: Any) -> Any:
    """What a reader made of a line, comparable across the two sides' classes."""
    if record is None:
        return None
    if hasattr(record, "event"):
        return record.event.SerializeToString(deterministic=True), record.kind, record.occurred_ms
    return record.reason, record.raw, record.offset


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--base", default="08e11c2", help="the commit to compare with")
    parser.add_argument("--file", type=Path, help="an event log (default: the generator log)")
    parser.add_argument("--lines", type=int, default=200_000, help="first N lines (0: all)")
    parser.add_argument("--rounds", type=int, default=6, help="runs of each side")
    parser.add_argument("--read-events", action="store_true", help="also time read_events")
    args = parser.parse_args()

    from connectors import jsonl, records

    old_jsonl, old_records = base_readers(args.base)
    lines = log_lines(args.file, args.lines)
    now = time.time()
    for n, line in enumerate(lines, 1):
        old = outcome(old_records.decode_line("f", n, line, ingest_ms=0, now_s=now))  # type: ignore[attr-defined]
        new = outcome(records.decode_line("f", n, line, ingest_ms=0, now_s=now))
        if old != new:
            raise SystemExit(f"line {n} differs:\n  base {old}\n  new  {new}")
    print(f"{len(lines):,} lines: both sides give the same outcome for each")

    def flow_reader(decode_line: Callable[..., Any]) -> float:
        t = time.process_time()
        for n, line in enumerate(lines, 1):
            decode_line("f", n, line, ingest_ms=0, now_s=now)
        return time.process_time() - t

    def produce_reader(read_events: Callable[..., Any]) -> float:
        t = time.process_time()
        for _ in read_events(lines, now_s=now):
            pass
        return time.process_time() - t

    measures: dict[str, tuple[Callable[..., float], Any, Any]] = {
        "decode_line": (flow_reader, old_records.decode_line, records.decode_line),  # type: ignore[attr-defined]
    }
    if args.read_events:
        measures["read_events"] = (produce_reader, old_jsonl.read_events, jsonl.read_events)  # type: ignore[attr-defined]
    per_line = 1e6 / len(lines)
    for measure, (run, old, new) in measures.items():
        olds: list[float] = []
        news: list[float] = []
        for round_no in range(args.rounds):
            pair = [(olds, old), (news, new)]
            for into, func in pair if round_no % 2 == 0 else pair[::-1]:
                into.append(run(func) * per_line)
            print(f"  {measure} round {round_no + 1}: base {olds[-1]:.2f}  new {news[-1]:.2f} µs")
        ratios = sorted(n / o for n, o in zip(news, olds, strict=True))
        print(
            f"{measure}: base {statistics.median(olds):.2f} µs/line, new "
            f"{statistics.median(news):.2f} µs/line (CPU); new/base median of paired rounds "
            f"{statistics.median(ratios):.3f} (range {ratios[0]:.3f}-{ratios[-1]:.3f}), "
            f"i.e. {1 / statistics.median(ratios):.2f}x cheaper"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
