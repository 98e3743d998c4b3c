"""What bounds one backfill process: the decode pass alone, decode + fold with no store, the
outputs built for a store that keeps nothing, and the full backfill into SQLite and into Redis,
in one process, interleaved, as events/s and CPU us an event (issue 13, ADR 0047).

    .venv/bin/python bench/backfill_ceiling.py \
        --log .oo/bench/backfill-50000u-5d-20261203-2000000.jsonl [--lines 1000000] [--rounds 2]

Each round runs every stage once over the log's first `--lines` lines (a copy in a temporary
file), in this order, reversed in every other round (ABBA):

  decode   `flows.backfill`'s reading of the file in batches and its decode of every line
           (`line_fast.fast_line_plain`, else `decode_line`), nothing kept (the floor: no
           backfill is faster than reading its lines)
  fold     `flows.backfill.backfill` with its span writes left out (`_write_span` returns 0):
           decode, grouping per user and every user's fold (`Pending.fold`), no outputs
  null     `backfill` into a store whose `write_batch` keeps nothing: + `build_write` of every
           user (its outputs, encoded), no store
  sqlite   `backfill` into a fresh SQLite file
  redis    `backfill` into the local Redis under a fresh key prefix (deleted afterwards); the
           Redis server's own CPU (`INFO cpu`) is printed beside it: on two cores that is CPU
           the backfill's process does not spend, and which `--processes 2` competes with

Per stage and round: wall events/s and the process's CPU us an event (`time.process_time`: all
its threads, so the store's writer thread is included), after `flows.runtime.tune_gc()` as the
command runs it. Printed: per round, then the medians and each stage's share of the full run's
CPU, and the ceiling each stage sets on one process (1e6 / its CPU us an event). Redis:
`--store-url`, else $OO_STORE_URL when it is redis://, else the local services (started if
needed).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.backfill import _redis_url  # noqa: E402
from connectors.line_fast import fast_line_plain  # noqa: E402
from connectors.records import decode_line  # noqa: E402
from connectors.store import open_store  # noqa: E402
from connectors.store.base import UserWrite  # noqa: E402
from flows import backfill as bf  # noqa: E402
from flows.runtime import tune_gc  # noqa: E402


class _NullStore:
    """Takes `write_batch` and keeps nothing: `build_write`'s cost without a store's."""

    def write_batch(self, writes: list[UserWrite], *, now_ms: int | None = None) -> list[str]:
        return []

    def close(self) -> None:
        pass


def _decode(log: Path) -> int:
    accepted = 0
    name = str(log)
    for first, batch in bf._batches(log):
        now_s = time.time()
        ingest_ms = int(now_s * 1000)
        for line_no, line in enumerate(batch, first):
            # As the backfill decodes: its fast path (plain events, ADR 0054), else decode_line.
            got = fast_line_plain(line, now_s)
            if got is not None:
                bf.Accepted(got[0], ingest_ms, got[1], got[2], (name, line_no, line))
                accepted += 1
                continue
            record = decode_line(name, line_no, line, ingest_ms=ingest_ms, now_s=now_s)
            if record is not None and not isinstance(record, bf.Rejected):
                accepted += 1
    return accepted


def _backfill(log: Path, store: Any, *, writes: bool = True) -> int:
    saved = bf._write_span
    if not writes:
        bf._write_span = lambda *args: 0  # type: ignore[assignment]
    try:
        report = bf.backfill(log, store, rejects_path=log.with_suffix(".rejects"))
    finally:
        bf._write_span = saved
    return report.accepted


def _redis_cpu_s(url: str) -> float:
    import redis

    client = redis.Redis.from_url(url)
    try:
        info = client.info("cpu")
    finally:
        client.close()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--log", type=Path, required=True)
    ap.add_argument("--lines", type=int, default=1_000_000, help="the log's first N lines")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--store-url", help="Redis URL (default: local services)")
    ap.add_argument("--skip-redis", action="store_true")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-ceiling-"))
    log = work / "events.jsonl"
    with args.log.open("rb") as src, log.open("wb") as out:
        out.writelines(islice(src, args.lines))
    redis_url = None if args.skip_redis else _redis_url(args.store_url)
    tune_gc()

    def sqlite() -> int:
        store = open_store(f"sqlite:///{work / (uuid.uuid4().hex + '.db')}")
        try:
            return _backfill(log, store)
        finally:
            store.close()
            for f in work.glob("*.db*"):
                f.unlink()

    redis_server: list[float] = []

    def redis_stage() -> int:
        from oo_features import services as oo_services

        assert redis_url is not None
        prefix = f"bc{uuid.uuid4().hex[:8]}"
        store = open_store(redis_url, key_prefix=prefix)
        before = _redis_cpu_s(redis_url)
        try:
            return _backfill(log, store)
        finally:
            redis_server.append(_redis_cpu_s(redis_url) - before)
            store.close()
            oo_services.delete_keys(redis_url, prefix)

    stages: dict[str, Callable[[], int]] = {
        "decode": lambda: _decode(log),
        "fold": lambda: _backfill(log, _NullStore(), writes=False),
        "null": lambda: _backfill(log, _NullStore()),
        "sqlite": sqlite,
    }
    if redis_url:
        stages["redis"] = redis_stage
    cpu: dict[str, list[float]] = {name: [] for name in stages}
    wall: dict[str, list[float]] = {name: [] for name in stages}
    events = 0
    print(f"log: first {args.lines:,} lines of {args.log}; load {os.getloadavg()[0]:.2f} at start")
    for r in range(args.rounds):
        order = list(stages) if r % 2 == 0 else list(reversed(stages))
        for name in order:
            gc.collect()
            c0, w0 = time.process_time(), time.perf_counter()
            events = stages[name]()
            c1, w1 = time.process_time(), time.perf_counter()
            cpu[name].append((c1 - c0) * 1e6 / events)
            wall[name].append(events / (w1 - w0))
            extra = ""
            if name == "redis":
                extra = f", Redis server {redis_server[-1] * 1e6 / events:.1f} us/event"
            print(f"round {r + 1} {name:<7} {wall[name][-1]:>8,.0f} events/s  "
                  f"{cpu[name][-1]:6.1f} us CPU/event{extra} (load {os.getloadavg()[0]:.2f})",
                  flush=True)  # fmt: skip
    print(f"\nmedians over {args.rounds} rounds ({events:,} events):")
    full = statistics.median(cpu["sqlite"])
    for name in stages:
        c = statistics.median(cpu[name])
        print(f"  {name:<7} {statistics.median(wall[name]):>8,.0f} events/s wall  {c:6.1f} us CPU/event"
              f"  ceiling {1e6 / c:>8,.0f} events/s  {c / full:5.0%} of sqlite's CPU")  # fmt: skip
    if redis_server:
        print(f"  Redis server: {statistics.median(redis_server) * 1e6 / events:.1f} us CPU/event")
    for f in work.iterdir():
        f.unlink()
    work.rmdir()


if __name__ == "__main__":
    main()
