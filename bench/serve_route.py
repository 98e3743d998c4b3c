"""One API route in process: CPU per call, and its latency, of two source trees interleaved.

The route runs in this process through the app's own ASGI callable (no HTTP server, no
client: what is measured is the app, its middleware and its store calls). Users are seeded
once (`bench/serve_seed.py`, every registered agent) into the real Redis (a unique key
prefix) or an SQLite file; then, for `--rounds` rounds, each tree of `--tree` (ABBA order,
so neither always runs first) runs `--calls` calls of `--route` in a fresh child process of
its own, with its own code (`sys.path[0]` = that tree):

  batch      POST /v1/features/batch of `--batch` users (random seeded ids)
  features   GET /v1/users/{id}/features
  recommend  POST /v1/recommend (fallback tips; with `--orchestrator peer` the tip of an
             OpenAI-compatible peer in its own process), with the tip ledger on
             (`OO_LEDGER_RETENTION_DAYS` 90) or off (0) by `--ledger on|off|both`; TipShown to a
             file, or to Kafka with `--kafka env`
  agents     GET /v1/agents (no store call)

Per child: process CPU (`time.process_time`, every thread: the store threads' decoding
included) per call, and per-call wall times: to the response's last byte (`response`) and
to the end of the ASGI call (`total`: background tasks, e.g. the ledger's store call,
included). Medians over rounds, and each tree's CPU ratio to the first tree's, per round. On
Redis also the server's own CPU per call (`INFO cpu`: only meaningful on a Redis nobody else
uses meanwhile) and a digest of all the child's answers (equal digests: byte-identical
answers; the batch calls and the seeded users are the same for every tree).

    eval "$(.venv/bin/oo-features services up)"
    git worktree add /tmp/serve-base 08e11c2
    nice -n 19 .venv/bin/python bench/serve_route.py --route batch --tree /tmp/serve-base --tree .
    nice -n 19 .venv/bin/python bench/serve_route.py --route batch --store sqlite --tree .
    nice -n 19 .venv/bin/python bench/serve_route.py --route recommend --ledger both --tree .
    nice -n 19 .venv/bin/python bench/serve_route.py --route recommend --ledger both \
        --orchestrator peer --kafka env --tree /tmp/serve-base --tree .
    nice -n 19 .venv/bin/python bench/serve_route.py --route batch --profile /tmp/batch.prof
    pip install --target /tmp/fw-old --no-deps fastapi==0.115.14 starlette==0.46.2
    nice -n 19 .venv/bin/python bench/serve_route.py --route agents --tree . --tree .+/tmp/fw-old

`--profile FILE` runs the first tree's first child under cProfile and prints the top.
Redis: `--store-url`, else $OO_STORE_URL; its keys are deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-route-token-0123456789abcdef"


# -- the child: one tree, one route ----------------------------------------------------------


async def _asgi_call(
    app: Any, method: str, path: str, body: bytes
) -> tuple[int, bytes, float, float]:
    """(status, body, seconds to the last body byte, seconds to the end of the call)."""
    start = time.perf_counter()
    done_at = [0.0]
    status = [0]
    chunks: list[bytes] = []
    sent = [False]

    async def receive() -> dict[str, Any]:
        if not sent[0]:
            sent[0] = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status[0] = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                done_at[0] = time.perf_counter()

    headers = [
        (b"host", b"bench"),
        (b"authorization", f"Bearer {TOKEN}".encode()),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    await app(scope, receive, send)
    end = time.perf_counter()
    return status[0], b"".join(chunks), done_at[0] - start, end - start


def _requests(args: argparse.Namespace, ids: list[str]) -> list[tuple[str, str, bytes]]:
    rng = random.Random(11)
    out = []
    for _ in range(args.calls + args.warmup):
        if args.route == "batch":
            body = json.dumps({"user_ids": rng.sample(ids, min(args.batch, len(ids)))})
            out.append(("POST", "/v1/features/batch", body.encode()))
        elif args.route == "features":
            out.append(("GET", f"/v1/users/{rng.choice(ids)}/features", b""))
        elif args.route == "recommend":
            body = json.dumps({"user_id": rng.choice(ids)})
            out.append(("POST", "/v1/recommend", body.encode()))
        else:
            out.append(("GET", "/v1/agents", b""))
    return out


async def _child_run(args: argparse.Namespace) -> dict[str, Any]:
    from pydantic import SecretStr

    from serving.app import create_app
    from serving.settings import Settings

    ids = [f"u-{i}" for i in range(args.users)]
    tmp = Path(tempfile.mkdtemp(prefix="oo-bench-route-"))
    settings = Settings(
        store_url=args.store_url,
        key_prefix=args.prefix,
        api_token=SecretStr(TOKEN),
        store_timeout_s=30,
        kafka_bootstrap=args.kafka or None,
        topic_prefix=f"{args.prefix}.",
        freshness_stamper=False,
        feedback_log=tmp / "feedback.jsonl",
        ledger_retention_days=90 if args.ledger == "on" else 0,
        freshness_check_interval_s=3600,
        orchestrator_url=args.orchestrator or None,
    )
    app = create_app(settings)
    requests = _requests(args, ids)
    responses, totals = [], []
    async with app.router.lifespan_context(app):
        for method, path, body in requests[: args.warmup]:
            status, _, _, _ = await _asgi_call(app, method, path, body)
            assert status == 200, (status, path)
        profiler = None
        if args.profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        digest = hashlib.sha256()
        server0 = _redis_cpu_s(args.store_url)
        cpu0 = time.process_time()
        for method, path, body in requests[args.warmup :]:
            status, out, response_s, total_s = await _asgi_call(app, method, path, body)
            if status != 200:
                raise RuntimeError(f"{method} {path} answered {status}: {out[:300]!r}")
            responses.append(response_s * 1000)
            totals.append(total_s * 1000)
            digest.update(out)
        cpu = time.process_time() - cpu0
        server = _redis_cpu_s(args.store_url) - server0
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
    return {
        "cpu_ms_per_call": cpu * 1000 / args.calls,
        "response_p50": statistics.median(responses),
        "response_p99": _pct(responses, 99),
        "total_p50": statistics.median(totals),
        "total_p99": _pct(totals, 99),
        "answer_bytes": len(out),
        "redis_cpu_ms_per_call": server * 1000 / args.calls,
        "answers_sha256": digest.hexdigest()[:16],
    }


def _redis_cpu_s(store_url: str) -> float:
    """The Redis server's own CPU so far (`INFO cpu`, user + sys; main thread and children),
    0 for a store that is not Redis. Only meaningful on a Redis nobody else uses meanwhile."""
    if not store_url.startswith("redis://"):
        return 0.0
    import redis

    client = redis.Redis.from_url(store_url)
    try:
        info = client.info("cpu")
    finally:
        client.close()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def _child(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(Path(args.child).resolve()))
    if args.extra_path:
        sys.path.insert(0, args.extra_path)
    import fastapi
    import starlette

    print(f"VERSIONS fastapi {fastapi.__version__} starlette {starlette.__version__}")
    result = asyncio.run(_child_run(args))
    print("RESULT " + json.dumps(result))
    return 0


# -- the parent: seed, interleave, report -----------------------------------------------------


def _start_peer() -> tuple[str, Any]:
    """The orchestrator peer of `bench/serve.py` in its own process: (its URL, stop())."""
    import multiprocessing as mp

    sys.path.insert(0, str(ROOT))
    from bench.serve_load import _peer_main

    parent, child = mp.get_context("spawn").Pipe()
    proc = mp.get_context("spawn").Process(target=_peer_main, args=(child,), daemon=True)
    proc.start()
    url = parent.recv()

    def stop() -> None:
        parent.send("stop")
        proc.join(timeout=10)
        if proc.is_alive():
            proc.terminate()

    return url, stop


def _run_child(
    args: argparse.Namespace, arm: str, store_url: str, prefix: str, ledger: str, profile: str
) -> dict[str, Any]:
    tree_text, _, extra = arm.partition("+")
    tree = Path(tree_text)
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        str(tree),
        "--route",
        args.route,
        "--store-url",
        store_url,
        "--prefix",
        prefix,
        "--users",
        str(args.users),
        "--batch",
        str(args.batch),
        "--calls",
        str(args.calls),
        "--warmup",
        str(args.warmup),
        "--ledger",
        ledger,
        "--kafka",
        args.kafka,
        "--orchestrator",
        args.orchestrator,
    ]
    if profile:
        cmd += ["--profile", profile]
    if extra:
        cmd += ["--extra-path", str(Path(extra).resolve())]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OO_")}
    env["PYTHONPATH"] = str(tree.resolve())
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=False)
    versions = ""
    for line in done.stdout.splitlines():
        if line.startswith("VERSIONS "):
            versions = line[9:]
        if line.startswith("RESULT "):
            return {**json.loads(line[7:]), "versions": versions}
    raise RuntimeError(f"child of {tree} failed ({done.returncode}):\n{done.stderr[-3000:]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--route", choices=("batch", "features", "recommend", "agents"), default="batch"
    )
    ap.add_argument(
        "--tree",
        action="append",
        help="source tree (repeat; default .); `DIR+PATH` also puts PATH first on sys.path "
        "(e.g. other fastapi/starlette versions installed with `pip install --target PATH`)",
    )
    ap.add_argument("--store", choices=("redis", "sqlite"), default="redis")
    ap.add_argument("--store-url", default=os.environ.get("OO_STORE_URL"))
    ap.add_argument("--users", type=int, default=1000, help="users seeded (default 1,000)")
    ap.add_argument("--batch", type=int, default=100, help="users per batch call (default 100)")
    ap.add_argument("--calls", type=int, default=300, help="measured calls per child (300)")
    ap.add_argument("--warmup", type=int, default=30, help="discarded calls per child (30)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of every tree (default 3)")
    ap.add_argument("--ledger", choices=("on", "off", "both"), default="on")
    ap.add_argument("--profile", default="", help="cProfile of the first child to this file")
    ap.add_argument(
        "--kafka",
        default="",
        help="events (TipShown) to this Kafka (topics prefixed per run) instead of a file; "
        "`env` for $OO_KAFKA_BOOTSTRAP",
    )
    ap.add_argument(
        "--orchestrator",
        default="",
        help="`peer`: recommend asks an OpenAI-compatible peer (tests.orchestrator_peer, in its "
        "own process, answering at once) instead of falling back",
    )
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    ap.add_argument("--prefix", default="", help=argparse.SUPPRESS)
    ap.add_argument("--extra-path", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return _child(args)

    trees: list[str] = args.tree or ["."]
    sys.path.insert(0, str(ROOT))
    from bench.serve_seed import seed
    from oo_features.services import delete_keys

    tmp = Path(tempfile.mkdtemp(prefix="oo-bench-route-"))
    prefix = f"bench-route-{uuid.uuid4().hex[:8]}"
    if args.store == "sqlite":
        store_url = f"sqlite:///{tmp}/features.db"
    else:
        if not args.store_url:
            raise SystemExit("Redis: give --store-url or set OO_STORE_URL (services up)")
        store_url = args.store_url
    if args.kafka == "env":
        args.kafka = os.environ.get("OO_KAFKA_BOOTSTRAP", "")
        if not args.kafka:
            raise SystemExit("--kafka env: set OO_KAFKA_BOOTSTRAP (services up)")
    peer_stop = None
    if args.orchestrator == "peer":
        args.orchestrator, peer_stop = _start_peer()
    ledgers = ["off", "on"] if args.ledger == "both" else [args.ledger]
    arms = [(tree, ledger) for tree in trees for ledger in ledgers]
    load0 = os.getloadavg()
    print(
        f"bench/serve_route.py {time.strftime('%Y-%m-%d %H:%M:%S %Z')}  route {args.route}  "
        f"store {args.store}  users {args.users}  batch {args.batch}  calls {args.calls}  "
        f"load {load0[0]:.2f}"
    )
    try:
        ids, seconds = seed(store_url, prefix, args.users)
        print(f"seeded {len(ids)} users in {seconds:.1f} s")
        results: dict[tuple[str, str], list[dict[str, Any]]] = {arm: [] for arm in arms}
        for r in range(args.rounds):
            order = arms if r % 2 == 0 else arms[::-1]
            for tree, ledger in order:
                profile = args.profile if (r == 0 and (tree, ledger) == arms[0]) else ""
                got = _run_child(args, tree, store_url, prefix, ledger, profile)
                results[(tree, ledger)].append(got)
                print(
                    f"  round {r + 1} {tree} ledger {ledger}: CPU {got['cpu_ms_per_call']:.3f} "
                    f"ms/call; response p50 {got['response_p50']:.2f} p99 "
                    f"{got['response_p99']:.2f} ms; total p50 {got['total_p50']:.2f} p99 "
                    f"{got['total_p99']:.2f} ms; Redis CPU {got['redis_cpu_ms_per_call']:.2f} "
                    f"ms/call; {got['answer_bytes']} B, answers {got['answers_sha256']}; "
                    f"{got['versions']}",
                    flush=True,
                )
    finally:
        if args.store == "redis":
            delete_keys(store_url, f"{prefix}:")
        if args.kafka:
            from oo_features.services import delete_topics

            delete_topics(args.kafka, f"{prefix}.", timeout_s=30)
        if peer_stop is not None:
            peer_stop()
    load1 = os.getloadavg()
    print(f"\nmedians over {args.rounds} rounds (load {load0[0]:.2f} -> {load1[0]:.2f}):")
    first = results[arms[0]]
    for arm in arms:
        rows = results[arm]
        med = {
            k: statistics.median(x[k] for x in rows)
            for k in rows[0]
            if k not in ("versions", "answers_sha256")
        }
        ratios = [
            x["cpu_ms_per_call"] / f["cpu_ms_per_call"] for x, f in zip(rows, first, strict=True)
        ]
        print(
            f"  {arm[0]} ledger {arm[1]}: CPU {med['cpu_ms_per_call']:.3f} ms/call "
            f"(ratio to first, per round: {', '.join(f'{x:.2f}' for x in ratios)}; median "
            f"{statistics.median(ratios):.2f}); response p50 {med['response_p50']:.2f} p99 "
            f"{med['response_p99']:.2f} ms; total p50 {med['total_p50']:.2f} p99 "
            f"{med['total_p99']:.2f} ms; Redis CPU {med['redis_cpu_ms_per_call']:.2f} ms/call; "
            f"answers {sorted({x['answers_sha256'] for x in rows})}"
        )
    if args.profile and Path(args.profile).exists():
        import pstats

        pstats.Stats(args.profile).sort_stats("cumulative").print_stats(35)
        pstats.Stats(args.profile).sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
