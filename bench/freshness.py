"""Latency of GET /v1/freshness with 100,000 users in Redis (issue: freshness SLA; target < 50 ms).

Seeds `--users` users the way production fills the store: `stamp_ingest` (the ingestion
stamper) and `write_batch` (the flow: 5 agents per user, batches of 1,000, so every agent's lag
stream is full). `--pending` of the users are left unreflected, with pending times spread over
the last 10 minutes (a third beyond a 30 s SLA), so the counts, the worst-offender list and the
idle-pending pruning all have work. Then one API process (`python -m oo_features.cli serve`,
uvicorn, one worker, no Kafka) is started against that Redis, and `--requests` sequential
GET /v1/freshness are timed from a keep-alive httpx client (after 50 warm-up requests); the
store call alone (`freshness_summary`, in this process) is timed the same way.

    .venv/bin/python bench/freshness.py                  # 100,000 users, 1,000 requests
    .venv/bin/python bench/freshness.py --users 10000    # quicker

Redis: `--store-url`, else the local services' (redis://127.0.0.1:16379/0). Keys are deleted
afterwards.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import redis  # noqa: E402

from bench.serve_api import wait_until_answers  # noqa: E402
from connectors.clock import now_ms  # noqa: E402
from connectors.store import AgentWrite, UserWrite, open_store  # noqa: E402
from features.registry import manifests  # noqa: E402

AGENTS = sorted(m.id for m in manifests())
SLA_MS = {m.id: m.freshness_sla_seconds * 1000 for m in manifests()}


def seed(store_url: str, key_prefix: str, users: int, pending: float) -> float:
    store = open_store(store_url, key_prefix=key_prefix)
    rng = random.Random(7)
    started = time.perf_counter()
    now = now_ms()
    ids = [f"u{i:06d}" for i in range(users)]
    skipped: list[str] = []
    for start in range(0, users, 1000):
        chunk = ids[start : start + 1000]
        ingest = {u: now - rng.randint(0, 3_000_000) for u in chunk}
        store.stamp_ingest(ingest)
        writes = []
        for u in chunk:
            if rng.random() < pending:
                skipped.append(u)
                continue
            computed = ingest[u] + int(rng.lognormvariate(3.5, 0.8))
            writes.append(
                UserWrite(
                    user_id=u,
                    newest_event_ms=ingest[u],
                    newest_ingest_ms=ingest[u],
                    agents={
                        a: AgentWrite(
                            agent_id=a,
                            version="1.0.0",
                            params={"p": {"value": 1, "source": "inferred"}},
                            extras={},
                            snippet="A short snippet.",
                            ttl_seconds=3600,
                            event_time_ms=ingest[u],
                            ingest_time_ms=ingest[u],
                            computed_at_ms=computed,
                        )
                        for a in AGENTS
                    },
                )
            )
        store.write_batch(writes)
    # The pending users: their oldest unreflected event within the last 10 minutes.
    late = {u: now - rng.randint(0, 600_000) for u in skipped}
    store.stamp_ingest(late, oldest=late)
    store.close()
    return time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_api(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "oo_features.cli", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    return wait_until_answers(proc, f"http://127.0.0.1:{port}/health", log)


def percentiles(ms: list[float]) -> str:
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return f"p50 {q[49]:.2f} ms  p99 {q[98]:.2f} ms  max {max(ms):.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--pending", type=float, default=0.01, help="share of users pending")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--store-url", default="redis://127.0.0.1:16379/0")
    args = parser.parse_args()

    key_prefix = f"bench-fresh-{uuid.uuid4().hex[:8]}"
    token = secrets.token_urlsafe(24)
    print(
        f"bench/freshness.py  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}  cpus {os.cpu_count()}  "
        f"users {args.users}  pending {args.pending:.0%}"
    )
    api = None
    tmp = Path(tempfile.mkdtemp(prefix="oo-bench-fresh-"))
    try:
        seed_s = seed(args.store_url, key_prefix, args.users, args.pending)
        print(f"seeded in {seed_s:.1f} s")

        store = open_store(args.store_url, key_prefix=key_prefix)
        server = redis.Redis.from_url(args.store_url)
        server.config_resetstat()
        direct = []
        for i in range(50 + args.requests):
            t = time.perf_counter()
            summary = store.freshness_summary(
                now_ms=now_ms(), window_ms=3_600_000, sla_ms_by_agent=SLA_MS, worst_n=10
            )
            if i >= 50:
                direct.append((time.perf_counter() - t) * 1000)
        store.close()
        print(
            f"active {summary.active_users}  pending {summary.pending_users}  "
            f"stale {summary.stale_users}  lag samples "
            f"{ {a: s.samples for a, s in summary.lag.items()} }"
        )
        print(f"store.freshness_summary (in this process): {percentiles(direct)}")
        # Redis's own time per command of the summary (ADR 0040: no step may hold the
        # single-threaded server long; a request's read waits behind the longest one).
        stats = server.info("commandstats")
        server.close()
        for name in ("cmdstat_evalsha", "cmdstat_xrevrange"):
            if name in stats:
                got = stats[name]
                print(
                    f"  Redis {name[8:]}: {got['calls'] / (50 + args.requests):.1f} a summary, "
                    f"{got['usec_per_call']:.1f} us of server time each"
                )

        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("OO_")}
        env |= {
            "OO_STORE_URL": args.store_url,
            "OO_KEY_PREFIX": key_prefix,
            "OO_API_TOKEN": token,
            "OO_FEEDBACK_LOG": str(tmp / "feedback.jsonl"),
            "PYTHONPATH": str(ROOT),
        }
        api = start_api(env, port, tmp / "api.log")
        timings = []
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {token}"},
            trust_env=False,
        ) as http:
            for i in range(50 + args.requests):
                t = time.perf_counter()
                got = http.get("/v1/freshness")
                elapsed = (time.perf_counter() - t) * 1000
                assert got.status_code == 200, got.text
                if i >= 50:
                    timings.append(elapsed)
            body = got.json()
        agent = body["agents"][AGENTS[0]]
        print(
            f"GET /v1/freshness ({len(got.content)} bytes; {AGENTS[0]}: active "
            f"{agent['active_users']}, compliance {agent['compliance']:.4f}, lag p50 "
            f"{agent['lag_ms']['p50']} p99 {agent['lag_ms']['p99']}): {percentiles(timings)}"
        )
    finally:
        if api is not None:
            api.terminate()
            api.wait(timeout=30)
        r = redis.Redis.from_url(args.store_url)
        keys = list(r.scan_iter(match=f"{key_prefix}:*", count=10_000))
        for i in range(0, len(keys), 5000):
            r.unlink(*keys[i : i + 5000])
        r.close()


if __name__ == "__main__":
    main()
