"""The write path in tail mode, two source trees interleaved: `build_write` and the store write,
CPU microseconds an event (issue 13; the flow's freshness at 5,000 events/s, issue 10).

Each run is a child process of one tree (`PYTHONPATH=<tree>`, the tree as working directory):
it generates `--warm` + `--events` events of `--users` users (`oo_features.generate`, seed 1),
folds and writes the first `--warm` of them (one write per user, untimed: a store that already
holds the users), then takes the rest in windows of `--window` events as the flow's tail mode
does: fold each window (untimed), one `build_write` per touched user with the writer's dedupe,
one `write_batch` of the window. Timed with `time.process_time()` around `build_write` and
around `write_batch` (client CPU), plus the write's wall time and, for Redis, the server's own
microseconds (`INFO commandstats` before and after the measured windows: a script's commands
are counted in it and again inside EVALSHA and EXEC, so it overstates scripts) and its own CPU
(`INFO cpu`, user + system of the server's main process: what two backfill processes compete
with; an append-only-file rewrite's child is not in it). Figures are per measured event (in
tail mode nearly every event is its own user's write).

Runs alternate A B B A ... per store, `--rounds` each, and the ratios B/A are medians of
per-round ratios (both runs of a round saw the same load).

    nice -n 19 .venv/bin/python bench/backfill_write_ab.py --a /tmp/write3-base --b . --redis
    nice -n 19 .venv/bin/python bench/backfill_write_ab.py --a . --b . --rounds 1   # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _server_usec(url: str) -> int:
    import redis

    stats = redis.Redis.from_url(url).info("commandstats")
    return sum(int(v.get("usec", 0)) for v in stats.values() if isinstance(v, dict))


def _server_cpu_s(url: str) -> float:
    import redis

    cpu = redis.Redis.from_url(url).info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def child(args: argparse.Namespace) -> None:
    """One run in this process (the tree on `sys.path`); prints one JSON line."""
    import gc
    import itertools

    from connectors.records import decode_line
    from connectors.store import open_store
    from features.state import UserState
    from flows.folding import Pending, build_write
    from oo_features.generate import generate_lines

    days = 2 + (args.warm + args.events) // (args.users * 10)
    lines = list(itertools.islice(generate_lines(args.users, days, 1), args.warm + args.events))
    now_ms = int(time.time() * 1000)
    records = []
    for n, line in enumerate(lines, start=1):
        record = decode_line("gen", n, line, ingest_ms=now_ms + n, now_s=now_ms / 1000)
        if record is not None and hasattr(record, "kind"):
            records.append(record)
    store = open_store(args.url, key_prefix=args.prefix)
    states: dict[str, UserState] = {}
    written: dict[str, dict[str, int]] = {}

    def window(batch: list) -> tuple[float, float, float, int]:
        per_user: dict[str, list] = {}
        for record in batch:
            per_user.setdefault(record.event.user_id, []).append(record)
        pending = {}
        for user_id, events in per_user.items():
            state = states.get(user_id)
            if state is None:
                state = states[user_id] = UserState(user_id)
            p = pending[user_id] = Pending()
            p.fold(state, events)
        t0 = time.process_time()
        writes = []
        for user_id, p in pending.items():
            w = build_write(states[user_id], p, written=written.setdefault(user_id, {}))
            if w is not None:
                writes.append(w)
        t1 = time.process_time()
        w0 = time.perf_counter()
        store.write_batch(writes)
        t2 = time.process_time()
        return t1 - t0, t2 - t1, time.perf_counter() - w0, len(writes)

    warm, measured = records[: args.warm], records[args.warm :]
    for i in range(0, len(warm), 5000):
        window(warm[i : i + 5000])
    # As the flow and the backfill run (flows/runtime.py): without it, cyclic collections of
    # the users' state land in whichever timed step happens to allocate.
    gc.collect()
    gc.freeze()
    gc.set_threshold(200_000, 50, 100)
    is_redis = args.url.startswith("redis")
    redis_before = _server_usec(args.url) if is_redis else 0
    cpu_before = _server_cpu_s(args.url) if is_redis else 0.0
    build = write = wall = 0.0
    writes = 0
    for i in range(0, len(measured), args.window):
        b, w, wl, n = window(measured[i : i + args.window])
        build, write, wall, writes = build + b, write + w, wall + wl, writes + n
    server = (_server_usec(args.url) - redis_before) if is_redis else 0
    server_cpu = (_server_cpu_s(args.url) - cpu_before) if is_redis else 0.0
    store.close()
    print(
        json.dumps(
            {
                "events": len(measured),
                "writes": writes,
                "build_us": 1e6 * build / len(measured),
                "write_us": 1e6 * write / len(measured),
                "write_wall_us": 1e6 * wall / len(measured),
                "server_us": server / len(measured),
                "server_cpu_us": 1e6 * server_cpu / len(measured),
            }
        )
    )


def _run(tree: Path, url: str, prefix: str, args: argparse.Namespace) -> dict[str, float]:
    cmd = [sys.executable, str(ROOT / "bench" / "backfill_write_ab.py"), "--child",
           "--url", url, "--prefix", prefix, "--users", str(args.users),
           "--warm", str(args.warm), "--events", str(args.events),
           "--window", str(args.window)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("OO_")}
    env["PYTHONPATH"] = str(tree)
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"run of {tree} exited {done.returncode}:\n{done.stderr[-3000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _redis_url() -> str:
    sys.path.insert(0, str(ROOT))
    from oo_features import services as oo_services

    state = oo_services.state_dir()
    endpoints = oo_services.running_endpoints(state) or oo_services.up(state)
    return endpoints.redis_url


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--a", type=Path, help="source tree A (before)")
    ap.add_argument("--b", type=Path, help="source tree B (after)")
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--warm", type=int, default=60_000)
    ap.add_argument("--events", type=int, default=30_000)
    ap.add_argument("--window", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--redis", action="store_true", help="also into the local Redis")
    ap.add_argument("--skip-sqlite", action="store_true", help="Redis only")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--prefix", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return 0
    if args.a is None or args.b is None:
        ap.error("--a and --b are required")
    trees = {"A": args.a.resolve(), "B": args.b.resolve()}
    redis_url = _redis_url() if args.redis else None
    work = Path(tempfile.mkdtemp(prefix="bench-write-ab-"))
    kinds = ([] if args.skip_sqlite else ["sqlite"]) + (["redis"] if redis_url else [])
    print(f"load {os.getloadavg()[0]:.1f} at start", flush=True)
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    for r in range(args.rounds):
        for kind in kinds:
            for name in ("A", "B") if r % 2 == 0 else ("B", "A"):
                prefix = f"bw{uuid.uuid4().hex[:8]}"
                url = f"sqlite:///{work / prefix}.db" if kind == "sqlite" else str(redis_url)
                got = _run(trees[name], url, prefix, args)
                runs.setdefault((kind, name), []).append(got)
                if kind == "redis":
                    from oo_features.services import delete_keys

                    delete_keys(str(redis_url), prefix + ":")
                for f in work.glob(prefix + ".db*"):
                    f.unlink()
                print(f"round {r} {kind:<6} {name}: build_write {got['build_us']:6.1f} us/event, "
                      f"store write {got['write_us']:6.1f} CPU us/event "
                      f"({got['write_wall_us']:6.1f} wall, server {got['server_us']:6.1f}, "
                      f"server CPU {got.get('server_cpu_us', 0.0):6.1f}); "
                      f"{got['writes']:.0f} writes of {got['events']:.0f} events; "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    print("\nmedians (us per event):")
    for kind in kinds:
        for name in ("A", "B"):
            got_runs = runs[(kind, name)]
            med = {k: statistics.median(g.get(k, 0.0) for g in got_runs) for k in got_runs[0]}
            print(f"  {kind:<6} {name}: build_write {med['build_us']:6.1f}, store write "
                  f"{med['write_us']:6.1f} CPU ({med['write_wall_us']:6.1f} wall, "
                  f"server {med['server_us']:6.1f}, server CPU "
                  f"{med.get('server_cpu_us', 0.0):6.1f})")  # fmt: skip
        for key in ("build_us", "write_us", "write_wall_us", "server_us", "server_cpu_us"):
            a, b = runs[(kind, "A")], runs[(kind, "B")]
            if all(x.get(key, 0) > 0 for x in a + b):
                ratio = statistics.median(y[key] / x[key] for x, y in zip(a, b, strict=True))
                print(f"  {kind} {key} B/A {ratio:.3f} (median of per-round ratios)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
