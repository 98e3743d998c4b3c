"""Where a tail-mode event's time goes inside the flow: per-stage timestamps (ADR 0039).

Runs `bench/flow.py --freshness` (same options, passed through) with a tracer in the flow
process. For the events of one user in `--every` (by a hash of the user id) it records, in
wall time: the Kafka timestamp (`ts`), when the source decoded the message (`fetch`), when
the merge released it (`release`), when `UserLogic.on_batch` folded it (`fold`), when the
write holding it was built (`build`), handed to the store writer (`enq`), taken by the writer
thread (`deq`) and answered by the store (`written`). It also records garbage-collector pauses
(`gc.callbacks`), gaps of more than 50 ms between a source partition's `next_batch` calls,
the worker blocked handing a batch to the writer, the writer's round trips (commands, wall
and thread CPU, socket reads), the merge's broker queries and fetches. Nothing in the engine
changes: the tracer wraps functions in the flow process only (a `sitecustomize` on
PYTHONPATH, active when `OO_FLOW_STAGES` names an output file), and costs the flow some CPU.

    .venv/bin/python bench/flow_stages.py                  # 5,000 events/s, as flow.py --freshness
    .venv/bin/python bench/flow_stages.py --rate 3000
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("ts", "fetch", "release", "fold", "build", "enq", "deq", "written")

_HOOK = """import os, sys
if os.environ.get("OO_FLOW_STAGES"):
    sys.path.insert(0, {root!r})
    import bench.flow_stages
    bench.flow_stages.hook_on_import()
"""


class _Trace:
    def __init__(self, every: int) -> None:
        self.every = every
        self.open: dict[tuple[str, int, int], dict[str, float]] = {}
        self.by_user: dict[str, list[tuple[str, int, int]]] = {}
        self.done: list[dict[str, float]] = []
        self.gcs: list[tuple[float, int, float]] = []
        self.gaps: list[float] = []
        self.blocked: list[float] = []
        self.rounds: list[tuple[int, float, float, int]] = []
        self.proofs: list[float] = []
        self.fetches: list[float] = []
        self.lock = threading.Lock()

    def traced(self, user_id: str) -> bool:
        return zlib.crc32(user_id.encode()) % self.every == 0

    def mark(self, user_id: str, stage: str, after: str, now: float) -> None:
        for key in self.by_user.get(user_id, ()):
            times = self.open.get(key)
            if times is not None and after in times and stage not in times:
                times[stage] = now


def _install(trace: _Trace) -> None:
    import gc

    from connectors import bytewax_io, kafka_merge, kafka_source
    from connectors.records import Accepted
    from connectors.store import redis_scripts
    from flows import features_flow

    started = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        elif (pause := time.perf_counter() - started[0]) > 0.002:
            trace.gcs.append((time.time(), info["generation"], pause))

    gc.callbacks.append(on_gc)

    decode = kafka_source.decode_messages

    def traced_decode(messages: list[Any], now_s: float, *args: Any) -> Any:
        out = decode(messages, now_s, *args)
        now = time.time()
        for user_id, record in out.records:
            if isinstance(record, Accepted) and trace.traced(user_id):
                key = (user_id, record.ingest_ms, record.offset)
                trace.open[key] = {"ts": record.ingest_ms / 1000, "fetch": now}
                trace.by_user.setdefault(user_id, []).append(key)
        return out

    kafka_source.decode_messages = traced_decode  # type: ignore[assignment]

    partition = kafka_source._EventPartition
    next_batch = partition.next_batch
    last_call: dict[int, float] = {}

    def traced_next_batch(self: Any) -> Any:
        begun = time.time()
        before = last_call.get(id(self))
        if before is not None and begun - before > 0.05:
            trace.gaps.append(begun - before)
        out = next_batch(self)
        now = last_call[id(self)] = time.time()
        for user_id, record in out:
            if isinstance(record, Accepted) and trace.traced(user_id):
                times = trace.open.get((user_id, record.ingest_ms, record.offset))
                if times is not None:
                    times["release"] = now
        return out

    partition.next_batch = traced_next_batch  # type: ignore[method-assign,assignment]

    logic = features_flow.UserLogic
    on_batch, flush = logic.on_batch, logic._flush

    def traced_on_batch(self: Any, values: list[Any]) -> Any:
        now = time.time()
        for record in values:
            user_id = record.event.user_id
            if trace.traced(user_id):
                times = trace.open.get((user_id, record.ingest_ms, record.offset))
                if times is not None:
                    times["fold"] = now
        return on_batch(self, values)

    def traced_flush(self: Any) -> Any:
        out = flush(self)
        now = time.time()
        for write in out:
            if trace.traced(write.user_id):
                trace.mark(write.user_id, "build", "fold", now)
        return out

    logic.on_batch = traced_on_batch  # type: ignore[method-assign,assignment]
    logic._flush = traced_flush  # type: ignore[method-assign,assignment]

    overlapped = bytewax_io._OverlappedStorePartition
    hand_over = overlapped.write_batch

    def traced_hand_over(self: Any, items: list[Any]) -> None:
        now = time.time()
        for write in items:
            if trace.traced(write.user_id):
                trace.mark(write.user_id, "enq", "build", now)
        hand_over(self, items)
        if (waited := time.time() - now) > 0.01:
            trace.blocked.append(waited)

    overlapped.write_batch = traced_hand_over  # type: ignore[method-assign,assignment]

    store_partition = bytewax_io._StorePartition
    store_write = store_partition.write_batch

    def traced_store_write(self: Any, items: list[Any]) -> None:
        taken = time.time()
        store_write(self, items)
        answered = time.time()
        with trace.lock:
            for write in items:
                if not trace.traced(write.user_id):
                    continue
                keep = []
                for key in trace.by_user.get(write.user_id, ()):
                    times = trace.open.get(key)
                    if times is None:
                        continue
                    if "enq" in times:
                        times["deq"], times["written"] = taken, answered
                        trace.done.append(trace.open.pop(key))
                    else:
                        keep.append(key)
                trace.by_user[write.user_id] = keep

    store_partition.write_batch = traced_store_write  # type: ignore[method-assign,assignment]

    send_and_read = getattr(redis_scripts, "_send_and_read", None)
    if send_and_read is not None:
        from redis._parsers import hiredis as hiredis_parser

        reads = [0]
        read_from_socket = hiredis_parser._HiredisParser.read_from_socket

        def counted_read(self: Any, *args: Any, **kwargs: Any) -> Any:
            reads[0] += 1
            return read_from_socket(self, *args, **kwargs)

        hiredis_parser._HiredisParser.read_from_socket = counted_read  # type: ignore[method-assign,assignment]

        def traced_round(conn: Any, commands: Any, weights: Any = None) -> Any:
            wall, cpu, before = time.perf_counter(), time.thread_time(), reads[0]
            out = send_and_read(conn, commands, weights)
            trace.rounds.append(
                (
                    len(commands),
                    time.perf_counter() - wall,
                    time.thread_time() - cpu,
                    reads[0] - before,
                )
            )
            return out

        redis_scripts._send_and_read = traced_round

    feed = kafka_merge.Feed
    prove_end, fetch = feed.prove_end, feed.fetch

    def traced_prove_end(self: Any, *args: Any) -> bool:
        begun = time.perf_counter()
        try:
            return prove_end(self, *args)
        finally:
            trace.proofs.append(time.perf_counter() - begun)

    def traced_fetch(self: Any, *args: Any) -> None:
        begun = time.perf_counter()
        try:
            fetch(self, *args)
        finally:
            trace.fetches.append(time.perf_counter() - begun)

    feed.prove_end = traced_prove_end  # type: ignore[method-assign,assignment]
    feed.fetch = traced_fetch  # type: ignore[method-assign,assignment]


def _dump(trace: _Trace, path: str) -> None:
    with trace.lock:
        data = {
            "done": list(trace.done),
            "gcs": trace.gcs,
            "gaps": trace.gaps,
            "blocked": trace.blocked,
            "rounds": trace.rounds,
            "proofs": trace.proofs,
            "fetches": trace.fetches,
        }
    Path(path).write_text(json.dumps(data))


def hook_on_import() -> None:
    """In the flow process (from the `sitecustomize`): wrap the flow's functions once
    `flows.features_flow` is imported, and write what was recorded every 5 s and at exit."""
    import atexit
    import builtins

    path = f"{os.environ['OO_FLOW_STAGES']}.{os.getpid()}"
    trace = _Trace(int(os.environ.get("OO_FLOW_STAGES_EVERY", "5")))
    original = builtins.__import__
    installed = [False]

    def importing(name: str, *args: Any, **kwargs: Any) -> Any:
        module = original(name, *args, **kwargs)
        if not installed[0] and name == "flows.features_flow":
            installed[0] = True
            builtins.__import__ = original
            _install(trace)
            atexit.register(_dump, trace, path)

            def every_5_s() -> None:
                while True:
                    time.sleep(5)
                    _dump(trace, path)

            threading.Thread(target=every_5_s, daemon=True).start()
        return module

    builtins.__import__ = importing


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def report(data: dict[str, Any], warmup_s: float) -> None:
    rows = [r for r in data["done"] if all(s in r for s in STAGES)]
    if rows:
        first = min(r["ts"] for r in rows)
        rows = [r for r in rows if r["ts"] > first + warmup_s]
    print(f"traced events written after the warm-up: {len(rows):,}")
    if not rows:
        return
    total = [1000 * (r["written"] - r["ts"]) for r in rows]
    print(
        f"  ts -> written (store answered)  p50 {_pct(total, 0.5):6.0f}  "
        f"p90 {_pct(total, 0.9):6.0f}  p99 {_pct(total, 0.99):6.0f} ms"
    )
    rows.sort(key=lambda r: r["written"] - r["ts"])
    tail = rows[int(0.98 * len(rows)) :]
    for a, b in itertools.pairwise(STAGES):
        v = [1000 * (r[b] - r[a]) for r in rows]
        mean_tail = sum(1000 * (r[b] - r[a]) for r in tail) / len(tail)
        print(
            f"  {a:>7} -> {b:<8} p50 {_pct(v, 0.5):6.1f}  p90 {_pct(v, 0.9):6.1f}  "
            f"p99 {_pct(v, 0.99):6.1f} ms; mean over the slowest 2 %: {mean_tail:6.1f} ms"
        )
    gcs = data["gcs"]
    print(
        f"GC pauses > 2 ms: {len(gcs)}, {sum(g[2] for g in gcs):.2f} s in all, longest "
        + ", ".join(
            f"{1000 * g[2]:.0f} ms (gen {g[1]})" for g in sorted(gcs, key=lambda g: -g[2])[:5]
        )
    )
    print(
        f"next_batch gaps > 50 ms: {len(data['gaps'])}, longest "
        f"{1000 * max(data['gaps'], default=0):.0f} ms; worker blocked handing over a batch "
        f"> 10 ms: {len(data['blocked'])} times, {sum(data['blocked']):.2f} s in all"
    )
    rounds = data["rounds"]
    if rounds:
        commands = sum(r[0] for r in rounds)
        print(
            f"store round trips: {len(rounds)}, {commands / len(rounds):.0f} commands each; "
            f"per command {1e6 * sum(r[1] for r in rounds) / commands:.0f} us wall, "
            f"{1e6 * sum(r[2] for r in rounds) / commands:.1f} us writer CPU; "
            f"{commands / max(1, sum(r[3] for r in rounds)):.1f} commands a socket read"
        )
    for name in ("proofs", "fetches"):
        v = [1000 * x for x in data[name]]
        print(
            f"{name}: {len(v)}, p50 {_pct(v, 0.5):.2f} ms, p99 {_pct(v, 0.99):.2f} ms, "
            f"{sum(v) / 1000:.1f} s in all"
        )


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    hook_dir = Path(tempfile.mkdtemp(prefix="oo-flow-stages-"))
    (hook_dir / "sitecustomize.py").write_text(_HOOK.format(root=str(ROOT)))
    out = str(hook_dir / "stages")
    path = os.environ.get("PYTHONPATH")
    env = {
        **os.environ,
        "PYTHONPATH": str(hook_dir) + (os.pathsep + path if path else ""),
        "OO_FLOW_STAGES": out,
    }
    code = subprocess.call(
        [sys.executable, str(ROOT / "bench" / "flow.py"), "--freshness", *args], env=env
    )
    # The flow process is the one that traced events (the bench's own processes trace none).
    dumps = [json.loads(p.read_text()) for p in hook_dir.glob("stages.*")]
    dumps = [d for d in dumps if d["done"]]
    if not dumps:
        print("no traced events (did the flow start?)")
        return 1
    warmup = 5.0
    if "--warmup" in args:
        warmup = float(args[args.index("--warmup") + 1])
    print()
    report(max(dumps, key=lambda d: len(d["done"])), warmup)
    return code


if __name__ == "__main__":
    sys.exit(main())
