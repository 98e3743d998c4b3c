"""Backfill throughput: one process against `--processes 2`, into SQLite and into Redis, and the
cost of shadow agents; interleaved rounds in one command, medians.

A generator log (`--users`, `--days`, first `--events` lines) is written once; then each round
runs, in this order, `oo-features backfill LOG` as a subprocess (timed from spawn to exit, the
real command: parsing, validation, folding, writes, rejects file) for every configuration:

  sqlite-1, sqlite-2           fresh SQLite file each run
  redis-1, redis-2             fresh key prefix each run (deleted afterwards)
  sqlite-1+shadows             sqlite-1 with OO_AGENT_PACKAGES=tests.shadow_agents (two shadow
                               versions of momentum: 8 agents instead of 6)

Events/s = events / wall time. Reported: medians per configuration, the 2-process speed-up
(ratio of medians, and the median of per-round ratios: interleaved, so both saw the same load),
and the shadows' extra time against the time of one process's fold of one agent (estimated as
sqlite-1's time / 6, an upper bound of one agent's share: parsing and writes are shared).

    .venv/bin/python bench/backfill.py                     # 400,000 events, 5,000 users, 3 rounds
    .venv/bin/python bench/backfill.py --events 50000 --rounds 1   # smoke check
    # the issue's workload (the log is generated once into .oo/bench/ and reused):
    .venv/bin/python bench/backfill.py --events 2000000 --users 50000 --days 5 --rounds 1 --skip-shadows

Redis: `--store-url`, else $OO_STORE_URL when it is redis://, else the local services
(`oo_features.services`, started if needed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _redis_url(arg: str | None) -> str:
    if arg:
        return arg
    env = os.environ.get("OO_STORE_URL", "")
    if env.startswith("redis://"):
        return env
    from oo_features import services as oo_services

    state = oo_services.state_dir()
    endpoints = oo_services.running_endpoints(state) or oo_services.up(state)
    return endpoints.redis_url


def _run(log: Path, url: str, prefix: str, processes: int, extra_env: dict[str, str]) -> float:
    cmd = [sys.executable, "-m", "oo_features.cli", "backfill", str(log), "--store-url", url,
           "--key-prefix", prefix, "--processes", str(processes)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("OO_")}
    env.update(extra_env)
    t = time.perf_counter()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - t
    if result.returncode not in (0, 1):
        raise SystemExit(f"backfill failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=400_000)
    ap.add_argument("--users", type=int, default=5_000)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--store-url", help="Redis URL (default: local services)")
    ap.add_argument("--skip-redis", action="store_true")
    ap.add_argument("--skip-shadows", action="store_true", help="leave out sqlite-1+shadows")
    ap.add_argument("--log", type=Path, help="an existing event log (default: generated, cached)")
    args = ap.parse_args()

    from oo_features.generate import generate_lines

    work = Path(tempfile.mkdtemp(prefix="bench-backfill-"))
    # Generated once per (users, days, events) and kept: the 2,000,000 events take
    # minutes to generate (`--log` takes any event log instead).
    log = args.log or ROOT / ".oo" / "bench" / (
        f"backfill-{args.users}u-{args.days}d-20261203-{args.events}.jsonl"
    )
    if not log.exists():
        log.parent.mkdir(parents=True, exist_ok=True)
        partial = log.with_suffix(".tmp")
        with partial.open("w") as out:
            for i, line in enumerate(generate_lines(args.users, args.days, 20261203)):
                if i == args.events:
                    break
                out.write(line + "\n")
        partial.rename(log)
    events = sum(1 for _ in log.open("rb"))
    shape = f"{log}" if args.log else f"{args.users:,} users ({args.days} days)"
    print(f"log: {events:,} events of {shape}; load {os.getloadavg()[0]:.1f} at start")
    redis_url = None if args.skip_redis else _redis_url(args.store_url)
    configs: list[tuple[str, str, int, dict[str, str]]] = [
        ("sqlite-1", "sqlite", 1, {}),
        ("sqlite-2", "sqlite", 2, {}),
    ]
    if not args.skip_shadows:
        configs.append(
            ("sqlite-1+shadows", "sqlite", 1, {"OO_AGENT_PACKAGES": "tests.shadow_agents"})
        )
    if redis_url:
        configs += [("redis-1", "redis", 1, {}), ("redis-2", "redis", 2, {})]
    times: dict[str, list[float]] = {name: [] for name, *_ in configs}
    for r in range(args.rounds):
        for name, kind, processes, extra in configs:
            prefix = f"bb{uuid.uuid4().hex[:8]}"
            url = f"sqlite:///{work / (prefix + '.db')}" if kind == "sqlite" else str(redis_url)
            times[name].append(_run(log, url, prefix, processes, extra))
            if kind == "redis":
                from tests.fixtures_services import _delete_keys

                _delete_keys(str(redis_url), prefix)
            else:
                for f in work.glob(prefix + ".db*"):
                    f.unlink()
            print(f"round {r + 1} {name:<18} {events / times[name][-1]:>9,.0f} events/s "
                  f"({times[name][-1]:.1f} s, load {os.getloadavg()[0]:.1f})", flush=True)  # fmt: skip
    print("\nmedians:")
    for name, ts in times.items():
        print(f"  {name:<18} {events / statistics.median(ts):>9,.0f} events/s")
    for kind in ("sqlite", "redis"):
        if f"{kind}-2" in times:
            one, two = times[f"{kind}-1"], times[f"{kind}-2"]
            per_round = statistics.median(a / b for a, b in zip(one, two, strict=True))
            print(f"  {kind}: 2 processes / 1 = {statistics.median(one) / statistics.median(two):.2f}"
                  f" (median of per-round ratios {per_round:.2f})")  # fmt: skip
    if "sqlite-1+shadows" not in times:
        return
    shadows_s = statistics.median(
        s - o for s, o in zip(times["sqlite-1+shadows"], times["sqlite-1"], strict=True)
    )
    print(f"  two shadows add {shadows_s:+.2f} s per run, {shadows_s / 2:+.2f} s each; one agent's share "
          f"of sqlite-1 is at most {statistics.median(times['sqlite-1']) / 6:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
