"""Latency benchmark of the serving API (`oo-features serve`) on loopback, open loop.

One API process (`python -m oo_features.cli serve`, uvicorn, one worker) is started as a
subprocess against the real Redis (unique `OO_KEY_PREFIX`) and Kafka (unique
`OO_TOPIC_PREFIX`, so `TipShown` publishing is included), with a random `OO_API_TOKEN` and
`OO_ORCHESTRATOR_URL` pointing at `tests.orchestrator_peer.OrchestratorPeer` running in its
own process (no GIL contention with the load generator) and answering at once.
`--users` users (every registered agent, realistic params and snippets with 7-day TTLs) are seeded
with `store.write_batch` first.

Load: an open-loop, paced generator. `--procs` processes each run an asyncio loop with
`--conns` keep-alive connections (`--client raw`, the default: minimal HTTP/1.1 over asyncio
streams; `--client httpx`: one `httpx.AsyncClient` pool, which on this 2-vCPU machine cannot
stay on a 500/s schedule itself) and send on a fixed arrival schedule (rate/procs each,
interleaved); a request's latency runs from its *scheduled* send
time to the end of its response, so a slow server or a late generator shows up as latency
(no coordinated omission). A phase is bounded in requests and time (5 s grace after the
schedule; anything still open then counts as an error).

Phases (a 3 s warm-up of each endpoint is discarded):
  1. baseline  GET /health at 500/s  (the generator + HTTP stack floor at that rate)
  2. features  GET /v1/users/{id}/features at 500/s, `--duration` s (target p99 <= 5 ms)
  3. steps     /health then /features at 250, 500, 750, 1000, 1500, 2000/s (`--step-duration`
               s each); stop when features p99 > 10 ms or the generator falls behind
               (completed < 97 % of the schedule, or p99 send lag > 5 ms)
  4. recommend baseline /health at 200/s; POST /v1/recommend at 200/s (target p99 <= 10 ms
               without the orchestrator's own time); the peer called directly at 200/s with
               the same client; the peer's in-handler service time; the API's own
               orchestrator-call histogram (/metrics) over the recommend phase.
  5. breakdown in-process timings of the request path pieces (store.read_user over Redis,
               response model build + JSON, prompt assembly), sequential.

    .venv/bin/python bench/serve.py                 # full run (~4 min)
    .venv/bin/python bench/serve.py --quick         # smoke run (~40 s, 1,000 users)
    .venv/bin/python bench/serve.py --quick --profile /tmp/api.prof   # + cProfile of the API

Modules: `serve_seed.py` (the seeded users), `serve_load.py` (the orchestrator peer, the
clients, one phase's percentiles), `serve_api.py` (the API process, its metrics, the breakdown,
the batch and ledger phases); this file runs the phases and prints the report.

Redis/Kafka: `--store-url`/`--bootstrap`, else $OO_STORE_URL/$OO_KAFKA_BOOTSTRAP, else the local
services (`oo_features.services`). Keys and topics are deleted afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.serve_api import (  # noqa: E402
    breakdown,
    cleanup,
    cpu_s,
    delta,
    free_port,
    hist_summary,
    loop_phases,
    scrape,
    start_api,
)
from bench.serve_load import _peer_main, pct, phase, show  # noqa: E402
from bench.serve_seed import seed  # noqa: E402
from features.registry import manifests  # noqa: E402

# -- main ------------------------------------------------------------------------------------


def start_private_redis(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A Redis of the bench's own, started like the services' (`redis_argv`: append-only,
    `appendfsync always`), on a free port; its process and URL once it answers."""
    import redis

    from oo_features.services import redis_argv
    from oo_features.services.redis_node import _redis_binary

    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = redis_argv(_redis_binary(lambda _: None), port, directory)
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 30
    while True:
        try:
            redis.Redis.from_url(url, socket_timeout=1).ping()
            return proc, url
        except redis.RedisError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"the ledger's Redis on {url} did not start") from None
            time.sleep(0.1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--duration", type=float, default=20.0, help="seconds of each steady phase (default 20)"
    )
    ap.add_argument(
        "--step-duration", type=float, default=10.0, help="seconds of each rate step (default 10)"
    )
    ap.add_argument("--users", type=int, default=10_000, help="users seeded (default 10,000)")
    ap.add_argument("--procs", type=int, default=1, help="load generator processes (default 1)")
    ap.add_argument(
        "--conns",
        type=int,
        default=32,
        help="keep-alive connections per generator process (default 32)",
    )
    ap.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="load generator client: raw asyncio HTTP/1.1 sockets (default; cheap) "
        "or httpx.AsyncClient (too slow to stay on schedule past ~300/s here)",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="small run: 1,000 users, 4 s phases, steps 250/500/1000",
    )
    ap.add_argument("--no-kafka", action="store_true", help="events to a temp file, not Kafka")
    ap.add_argument("--store-url", default=os.environ.get("OO_STORE_URL"))
    ap.add_argument("--bootstrap", default=os.environ.get("OO_KAFKA_BOOTSTRAP"))
    ap.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="run the API under cProfile, write the stats here and print the top "
        "(skews every latency; for the breakdown only)",
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument(
        "--loop",
        action="store_true",
        help="issue 12 only: POST /v1/features/batch of 100 users at 20/s, then the tip "
        "ledger's cost on POST /v1/recommend at 200/s (bench/serve_ledger.py: a fresh API "
        "with the ledger on against two with OO_LEDGER_RETENTION_DAYS=0, one of them the "
        "control, in many short interleaved phases)",
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="--loop: 0 skips the ledger phases (bench/serve_ab.py); any other value runs them",
    )
    ap.add_argument(
        "--ledger-blocks",
        type=int,
        default=36,
        help="--loop: blocks of ledger phases, one phase of each of the three APIs a block "
        "(default 36: each of the 6 orders 6 times; 18 left the CI wider than the 1 ms "
        "target's margin: ADR 0046)",
    )
    ap.add_argument(
        "--ledger-phase-s",
        type=float,
        default=2.0,
        help="--loop: seconds of each ledger phase (default 2)",
    )
    ap.add_argument(
        "--ledger-rate", type=float, default=200.0, help="--loop: recommend rate (default 200/s)"
    )
    ap.add_argument(
        "--ledger-store-url",
        default=os.environ.get("OO_LEDGER_STORE_URL"),
        help="the tip ledger's own Redis (OO_LEDGER_STORE_URL, ADR 0052); default: with --loop "
        "a private Redis started here with the services' command line (appendfsync always), "
        "unless --ledger-shared",
    )
    ap.add_argument(
        "--ledger-shared",
        action="store_true",
        help="keep the tip ledger in the feature store's Redis (the layout before ADR 0052)",
    )
    ap.add_argument(
        "--ledger-tree-a",
        type=Path,
        default=None,
        metavar="DIR",
        help="--loop: a fourth API in the ledger phases, the ledger on, served by the source "
        "tree DIR (a checkout with its own .venv, e.g. main's) beside this tree's: 'on-A', "
        "interleaved with the three others, so one run compares the ledger's cost of both "
        "trees under the same conditions (ADR 0058)",
    )
    args = ap.parse_args()

    steps = [250, 500, 750, 1000, 1500, 2000]
    if args.quick:
        args.users = min(args.users, 1_000)
        args.duration = min(args.duration, 4.0)
        args.step_duration = min(args.step_duration, 3.0)
        steps = [250, 500, 1000]
    if not args.store_url or (not args.bootstrap and not args.no_kafka):
        args.store_url = args.store_url or "redis://127.0.0.1:16379/0"
        args.bootstrap = args.bootstrap or "127.0.0.1:19092"
    bootstrap = None if args.no_kafka else args.bootstrap

    run_id = uuid.uuid4().hex[:10]
    key_prefix = f"bench-serve-{run_id}"
    topic_prefix = f"bench-serve-{run_id}."
    token = secrets.token_urlsafe(24)[:32]
    tmp = Path(tempfile.mkdtemp(prefix="oo-bench-serve-"))
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cmd": " ".join([".venv/bin/python", "bench/serve.py", *sys.argv[1:]]),
        "cpus": os.cpu_count(),
    }

    print(
        f"bench/serve.py  {results['date']}  cpus {os.cpu_count()}  users {args.users}  "
        f"generator {args.client} {args.procs} procs x {args.conns} conns  kafka {bootstrap or 'off'}"
    )

    parent, child = mp.get_context("spawn").Pipe()
    peer_proc = mp.get_context("spawn").Process(target=_peer_main, args=(child,), daemon=True)
    peer_proc.start()
    peer_url = parent.recv()

    api: subprocess.Popen[bytes] | None = None
    ledger_redis: subprocess.Popen[bytes] | None = None
    try:
        if args.loop and not args.ledger_shared and not args.ledger_store_url:
            ledger_redis, args.ledger_store_url = start_private_redis(tmp / "ledger-redis")
        ledger_url = None if args.ledger_shared else args.ledger_store_url
        print(f"tip ledger: {ledger_url or 'in the feature store'}")
        ids, seed_s = seed(args.store_url, key_prefix, args.users)
        print(
            f"seeded {len(ids)} users x {len(manifests())} agents in {seed_s:.1f} s (write_batch of 500)"
        )

        env = {k: v for k, v in os.environ.items() if not k.startswith("OO_")}
        env.update(
            {
                "OO_STORE_URL": args.store_url,
                "OO_KEY_PREFIX": key_prefix,
                "OO_API_TOKEN": token,
                "OO_ORCHESTRATOR_URL": peer_url,
                "OO_TOPIC_PREFIX": topic_prefix,
                "OO_FEEDBACK_LOG": str(tmp / "feedback.jsonl"),
                "PYTHONPATH": str(ROOT),
            }
        )
        if bootstrap:
            env["OO_KAFKA_BOOTSTRAP"] = bootstrap
        if ledger_url:
            env["OO_LEDGER_STORE_URL"] = ledger_url
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        api = start_api(env, port, tmp / "api.log", args.profile)
        print(f"API pid {api.pid} on {base}; peer {peer_url}; log {tmp / 'api.log'}")

        def run(
            kind: str,
            rate: float,
            duration: float,
            url: str = base,
            pid: int | None = None,
            keep_lat: bool = False,
        ) -> dict[str, Any]:
            """One phase against `url`; CPU per request of the process `pid` (the API)."""
            pid = api.pid if pid is None else pid
            c0 = cpu_s(pid)
            r = phase(
                url, kind, rate, duration, ids, token, args.procs, args.conns, args.client, keep_lat
            )
            r["api_cpu_ms_per_req"] = (cpu_s(pid) - c0) * 1000 / max(1, r["scheduled"])
            if not keep_lat:
                print("  " + show(r), flush=True)
            return r

        print("warm-up (discarded)")
        run("features", 200, 3)
        run("recommend", 100, 3)

        if args.loop:
            results.update(loop_phases(args, env, tmp, base, api, run))
            if args.json:
                args.json.write_text(json.dumps(results, indent=2, default=str))
            return 0

        print("1-2. steady 500/s")
        results["health_500"] = run("health", 500, args.duration)
        m0 = scrape(base)
        results["features_500"] = run("features", 500, args.duration)
        m1 = scrape(base)
        results["features_500_server"] = hist_summary(
            delta(m0, m1, "oo_api_request_duration_seconds"),
            "oo_api_request_duration_seconds",
            "features",
        )
        print(f"  server-side (middleware histogram) features: {results['features_500_server']}")

        print("3. rate steps")
        results["steps"] = []
        best = None
        for rate in steps:
            h = run("health", rate, args.step_duration / 2)
            f = run("features", rate, args.step_duration)
            behind = (f["ok"] < 0.97 * f["scheduled"]) or f["lag_p99"] > 5.0
            results["steps"].append({"rate": rate, "health": h, "features": f, "behind": behind})
            if f["p99"] > 10.0 or behind:
                why = "p99 > 10 ms" if f["p99"] > 10.0 else "generator behind schedule"
                print(f"  stop at {rate}/s: {why}")
                break
            best = rate
        results["max_rate_p99_10ms"] = best
        print(f"  highest rate held with features p99 <= 10 ms: {best}/s")

        print("4. recommend at 200/s")
        results["health_200"] = run("health", 200, args.duration)
        parent.send("reset")
        parent.recv()
        m0 = scrape(base)
        results["recommend_200"] = run("recommend", 200, args.duration)
        m1 = scrape(base)
        parent.send("stats")
        peer_times = parent.recv()
        d = delta(m0, m1, "oo_")
        results["recommend_server"] = hist_summary(
            d, "oo_api_request_duration_seconds", "recommend"
        )
        results["orchestrator_call"] = hist_summary(
            d, "oo_orchestrator_request_duration_seconds", ""
        )
        results["orchestrator_outcomes"] = {
            k: v for k, v in d.items() if k.startswith("oo_orchestrator_calls_total") and v
        }
        results["tips"] = {k: v for k, v in d.items() if k.startswith("oo_tips") and v}
        results["events_failed"] = sum(v for k, v in d.items() if k.startswith("oo_events_failed"))
        results["peer_service_ms"] = {
            "n": len(peer_times),
            "p50": pct(peer_times, 50),
            "p99": pct(peer_times, 99),
        }
        print(f"  server-side recommend: {results['recommend_server']}")
        print(
            f"  API's orchestrator call (histogram): {results['orchestrator_call']}; "
            f"outcomes {results['orchestrator_outcomes']}"
        )
        print(f"  peer in-handler service time: {results['peer_service_ms']}")
        print(f"  tips {results['tips']}  failed events {results['events_failed']:.0f}")
        results["peer_direct_200"] = run("peer", 200, args.duration / 2, url=peer_url)

        print("5. in-process breakdown (sequential, this process)")
        results["breakdown"] = breakdown(args.store_url, key_prefix, ids, 2000)
        for name, (p50, p99) in results["breakdown"].items():
            print(f"  {name:<45} p50 {p50:.3f} ms  p99 {p99:.3f} ms")

        rec, peer_d = results["recommend_200"], results["peer_direct_200"]
        print("\nsummary")
        print(
            f"  features @500/s: p50 {results['features_500']['p50']:.2f} ms, "
            f"p99 {results['features_500']['p99']:.2f} ms (target <= 5); "
            f"/health baseline p50 {results['health_500']['p50']:.2f}, "
            f"p99 {results['health_500']['p99']:.2f} ms; ratio p99 "
            f"{results['features_500']['p99'] / results['health_500']['p99']:.2f}"
        )
        print(f"  highest features rate with p99 <= 10 ms: {best}/s")
        print(
            f"  recommend @200/s: p50 {rec['p50']:.2f}, p99 {rec['p99']:.2f} ms incl. the "
            f"orchestrator call; peer direct p50 {peer_d['p50']:.2f}, p99 {peer_d['p99']:.2f} "
            f"ms; /health baseline p99 {results['health_200']['p99']:.2f} ms"
        )
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str))
    finally:
        if api is not None:
            api.send_signal(signal.SIGTERM)
            try:
                api.wait(timeout=20)
            except subprocess.TimeoutExpired:
                api.kill()
        with contextlib.suppress(Exception):
            parent.send("stop")
        peer_proc.join(timeout=10)
        if peer_proc.is_alive():
            peer_proc.terminate()
        cleanup(args.store_url, key_prefix, bootstrap, topic_prefix)
        print(f"cleaned up keys {key_prefix}:* and topics {topic_prefix}*")
        if ledger_redis is not None:
            ledger_redis.kill()
            ledger_redis.wait(30)
        elif args.ledger_store_url and not args.ledger_shared:
            cleanup(args.ledger_store_url, key_prefix, None, topic_prefix)
        if args.profile and args.profile.exists():
            import pstats

            print(f"\nAPI cProfile ({args.profile}), top 30 by cumulative time:")
            pstats.Stats(str(args.profile)).sort_stats("cumulative").print_stats(30)
            pstats.Stats(str(args.profile)).sort_stats("tottime").print_stats(20)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
