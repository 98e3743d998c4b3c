"""The cost of Redis persistence on the flow's write path (ADR 0010).

`RedisStore.write_batch` (what the flow's store sink calls) against private redis-server
instances with no persistence, AOF `appendfsync everysec` and AOF `appendfsync always`,
interleaved rounds; prints user writes per second (500 users x 5 agents a batch).

    .venv/bin/python bench/persistence.py [--rounds 3] [--batches 40] [--users 500]

The flow end to end: run `bench/flow.py --store-url redis://...` against a Redis started with
each setting, interleaved (BENCHMARKS.md, "Redis persistence").
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectors import clock  # noqa: E402
from connectors.store import AgentWrite, UserWrite, open_store  # noqa: E402
from tests.outage import free_port  # noqa: E402

MODES = {
    "none": ["--appendonly", "no"],
    "everysec": ["--appendonly", "yes", "--appendfsync", "everysec"],
    "always": ["--appendonly", "yes", "--appendfsync", "always"],
}
AGENTS = ["momentum", "focus-area", "time-of-day", "mood", "recent-patterns"]


def batch(i: int, users: int, now: int) -> list[UserWrite]:
    return [
        UserWrite(
            user_id=f"u{u}",
            agents={
                a: AgentWrite(
                    a,
                    "1.0.0",
                    {"w": {"value": 0.5 + i, "source": "inferred"}},
                    {"seen": i},
                    f"snippet {a} {i}",
                    3600,
                    now + i,
                    now + i,
                    now + i,
                )
                for a in AGENTS
            },
            consents={"tasks": True},
            feedback={"feedback_events": i},
            newest_event_ms=now + i,
            newest_ingest_ms=now + i,
        )
        for u in range(users)
    ]


def measure(url: str, prefix: str, *, batches: int, users: int) -> float:
    """User writes per second of `store.write_batch` into the store at `url` (waits up to 30 s
    for it to answer; the first batch, which connects and loads the scripts, is not timed)."""
    store = open_store(url, key_prefix=prefix, socket_timeout_s=30)
    deadline = time.monotonic() + 30
    while True:
        try:
            store.ping()
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    now = clock.now_ms()
    prepared = [batch(i, users, now) for i in range(batches + 1)]
    store.write_batch(prepared[0])
    started = time.perf_counter()
    for writes in prepared[1:]:
        store.write_batch(writes)
    elapsed = time.perf_counter() - started
    store.close()
    return batches * users / elapsed


def run(mode: str, *, batches: int, users: int) -> float:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix=f"persistence-{mode}-") as folder:
        redis = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
             *MODES[mode], "--dir", folder, "--logfile", f"{folder}/redis.log"]
        )  # fmt: skip
        try:
            return measure(f"redis://127.0.0.1:{port}/0", "bp", batches=batches, users=users)
        finally:
            redis.kill()
            redis.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--users", type=int, default=500)
    args = parser.parse_args()
    results: dict[str, list[float]] = {mode: [] for mode in MODES}
    for round_no in range(args.rounds):
        for mode in MODES:
            results[mode].append(run(mode, batches=args.batches, users=args.users))
            print(f"round {round_no + 1} {mode:8s} {results[mode][-1]:,.0f} user writes/s")
    for mode, values in results.items():
        runs = ", ".join(f"{v:,.0f}" for v in values)
        print(f"{mode:8s} median {statistics.median(values):,.0f} user writes/s ({runs})")


if __name__ == "__main__":
    main()
