"""The flow's validation (`codec.parse_and_check`) of two trees, in one process, interleaved.

Loads `connectors/codec.py` of tree A and of tree B as two modules, checks that they answer
the same (event, kind, occurred_ms) for the first 20,000 events, then times, in CPU seconds
(`time.process_time`, the collector off), `parse_and_check` over `--events` serialized
generator events (the mix `bench/flow_ab.py` loads), A B B A ..., and prints the medians and
the per-pair ratios (ADR 0037). No broker: only the Python of the Kafka path's validation.

    .venv/bin/python bench/flow_codec_ab.py --a ../wt-base --b . --events 100000 --pairs 7
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.flow_loops import _events  # noqa: E402


def _load(tree: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, tree / "connectors" / "codec.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _time(module: ModuleType, values: list[bytes], now_s: float) -> float:
    """CPU µs an event of one pass."""
    parse = module.parse_and_check
    gc.collect()
    gc.disable()
    try:
        started = time.process_time()
        for value in values:
            parse(value, now_s=now_s)
        spent = time.process_time() - started
    finally:
        gc.enable()
    return 1e6 * spent / len(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--a", type=Path, required=True, help="source tree A (before)")
    parser.add_argument("--b", type=Path, required=True, help="source tree B (after)")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=6_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--pairs", type=int, default=7)
    args = parser.parse_args(argv)
    modules = {"A": _load(args.a.resolve(), "codec_a"), "B": _load(args.b.resolve(), "codec_b")}
    values = [e.SerializeToString() for e in _events(args.events, args.users, args.seed)]
    now_s = time.time()
    for value in values[:20_000]:
        a = modules["A"].parse_and_check(value, now_s=now_s)
        b = modules["B"].parse_and_check(value, now_s=now_s)
        assert a == b, f"the trees disagree on {value!r}"
    per_event: dict[str, list[float]] = {"A": [], "B": []}
    for i in range(args.pairs):
        for name in ("A", "B") if i % 2 == 0 else ("B", "A"):
            per_event[name].append(_time(modules[name], values, now_s))
    ratios = [b / a for a, b in zip(per_event["A"], per_event["B"], strict=True)]
    print(
        f"parse_and_check CPU an event (median of {args.pairs}): "
        f"A {statistics.median(per_event['A']):.3f} us, B {statistics.median(per_event['B']):.3f} us; "
        f"B/A per pair {', '.join(f'{r:.3f}' for r in ratios)}; median {statistics.median(ratios):.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
