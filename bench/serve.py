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

Redis/Kafka: `--store-url`/`--bootstrap`, else $OO_STORE_URL/$OO_KAFKA_BOOTSTRAP, else the local
services (`oo_features.localservices`). Keys and topics are deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing as mp
import os
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from connectors.store import AgentWrite, UserWrite, open_store  # noqa: E402
from features.registry import manifests  # noqa: E402

AGENTS: dict[str, tuple[str, Any]] = {}  # filled by _agent_writes

SNIPPETS = {
    "focus-area": "Most of your completions over the last four weeks were in {a} and {b}; "
    "those two projects are where your effort goes.",
    "momentum": "You have completed {n} tasks today, {z:.1f} standard deviations above your "
    "28-day baseline of {base:.1f} per day: momentum is {trend}.",
    "overdue-task": "'{task}' in {a} is {days} days overdue; tasks in {a} usually slip by "
    "about {tol:.1f} days, so this one is later than usual.",
    "recent-patterns": "Your completions follow a weekly cycle (strength {w:.2f}) more than a "
    "daily one ({d:.2f}) over the last {lb} days.",
    "time-of-day": "You finish most tasks around {h}:00; your peak hours are {p} and you are "
    "usually quiet between {qs}:00 and {qe}:00.",
}
PROJECTS = ["work", "home", "side-project", "health", "finance", "learning", "garden"]
TASKS = [
    "Quarterly report",
    "Dentist appointment",
    "Renew passport",
    "Fix the bike",
    "Reply to Anna",
    "Tax return",
    "Plan the offsite",
    "Water the plants",
]


# -- seeding --------------------------------------------------------------------------------


def _p(value: Any, source: str = "inferred") -> dict[str, Any]:
    return {"value": value, "source": source}


def _user_write(uid: str, rng: random.Random, now_ms: int) -> UserWrite:
    a, b = rng.sample(PROJECTS, 2)
    base = rng.uniform(0.5, 8.0)
    stdev = rng.uniform(0.3, 3.0)
    n = rng.randint(0, 15)
    z = (n - base) / stdev
    trend = "rising" if z > 1 else "falling" if z < -1 else "steady"
    tol = rng.uniform(0.0, 4.0)
    h = rng.randint(6, 22)
    peak = sorted(rng.sample(range(6, 23), 3))
    w, d = rng.random(), rng.random()
    lb = rng.choice([14, 28, 56])
    task = rng.choice(TASKS)
    days = rng.randint(1, 20)
    params = {
        "focus-area": {"preferred_areas": _p([a, b])},
        "momentum": {
            "baseline_completions_per_day": _p(round(base, 3)),
            "stdev": _p(round(stdev, 3)),
            "z": _p(round(z, 3)),
            "engagement_trend": _p(trend),
        },
        "overdue-task": {
            "lateness_tolerance_days": _p(round(tol, 2)),
            "project_realness": _p({p: round(rng.random(), 3) for p in rng.sample(PROJECTS, 4)}),
        },
        "recent-patterns": {
            "lookback_days": _p(lb),
            "weekly_cycle": _p(round(w, 3)),
            "daily_cycle": _p(round(d, 3)),
        },
        "time-of-day": {
            "preferred_hour": _p(h),
            "quiet_start": {"value": 23, "source": "user", "inferred_value": 22},
            "quiet_end": _p(7, "cold_start"),
            "peak_hours": _p(peak),
            "tz": {"value": "Europe/Berlin", "source": "user", "inferred_value": "UTC"},
        },
    }
    extras: dict[str, dict[str, Any]] = {
        "overdue-task": {
            "overdue": [
                {
                    "task_id": f"t-{rng.randrange(10**6)}",
                    "title": task,
                    "project": a,
                    "days_overdue": days,
                }
            ]
        },
        "focus-area": {"completions_28d": {a: rng.randint(10, 60), b: rng.randint(5, 30)}},
    }
    texts = {
        "focus-area": SNIPPETS["focus-area"].format(a=a, b=b),
        "momentum": SNIPPETS["momentum"].format(n=n, z=z, base=base, trend=trend),
        "overdue-task": SNIPPETS["overdue-task"].format(task=task, a=a, days=days, tol=tol),
        "recent-patterns": SNIPPETS["recent-patterns"].format(w=w, d=d, lb=lb),
        "time-of-day": SNIPPETS["time-of-day"].format(
            h=h, p=", ".join(map(str, peak)), qs=23, qe=7
        ),
    }
    # Every registered agent is seeded: those without hand-written values above get their
    # manifest's cold-start values and a generic sentence, so a new agent needs no edit here.
    for m in manifests():
        if m.id not in params:
            params[m.id] = {name: _p(value, "cold_start") for name, value in m.cold_start.items()}
            texts[m.id] = f"{m.description} (seeded by bench/serve.py)"
    event_ms = now_ms - rng.randint(0, 3_600_000)
    agents = {
        agent_id: AgentWrite(
            agent_id=agent_id,
            version="1.0.0",
            params=params[agent_id],
            extras=extras.get(agent_id, {}),
            snippet=texts[agent_id],
            ttl_seconds=7 * 86_400,
            event_time_ms=event_ms,
            ingest_time_ms=event_ms + rng.randint(1, 500),
            computed_at_ms=now_ms,
        )
        for agent_id in params
    }
    return UserWrite(
        user_id=uid,
        agents=agents,
        feedback={"last_reaction": "helpful", "tips_shown": rng.randint(0, 40)},
        consents={"tasks": True},
        newest_event_ms=event_ms,
        newest_ingest_ms=event_ms + 1,
    )


def seed(store_url: str, key_prefix: str, users: int) -> tuple[list[str], float]:
    store = open_store(store_url, key_prefix=key_prefix)
    rng = random.Random(42)
    now_ms = time.time_ns() // 1_000_000
    ids = [f"u-{i}" for i in range(users)]
    t = time.perf_counter()
    for i in range(0, users, 500):
        store.write_batch(
            [_user_write(uid, rng, now_ms) for uid in ids[i : i + 500]], now_ms=now_ms
        )
    elapsed = time.perf_counter() - t
    probe = store.read_user(ids[-1])
    assert probe is not None and len(probe.agents) == len(manifests()), "seeding failed"
    assert all(a.snippet for a in probe.agents.values()), "snippets missing after seeding"
    store.close()
    return ids, elapsed


# -- the orchestrator peer, in its own process -----------------------------------------------


def _peer_main(conn: Any) -> None:
    from tests.orchestrator_peer import OrchestratorPeer

    peer = OrchestratorPeer(answer={"text": "Finish the quarterly report first.", "kind": "todo"})
    handler: Any = peer._server.RequestHandlerClass
    handler.disable_nagle_algorithm = True  # see BENCHMARKS.md: header/body are two writes
    original = handler.do_POST
    times: list[float] = []

    def timed(self: Any) -> None:
        t = time.perf_counter()
        original(self)
        times.append((time.perf_counter() - t) * 1000)
        if len(peer.bodies) > 1000:  # the peer keeps every body; bound its memory
            peer.reset()

    handler.do_POST = timed
    peer.start()
    conn.send(peer.url)
    while True:
        msg = conn.recv()
        if msg == "reset":
            times.clear()
            conn.send(True)
        elif msg == "stats":
            conn.send(list(times))
        else:
            break
    peer.stop()


# -- the load generator ----------------------------------------------------------------------


async def _load(
    base_url: str,
    kind: str,
    rate: float,
    duration: float,
    offset: float,
    start_wall: float,
    ids: list[str],
    token: str,
    conns: int,
    seed_: int,
) -> dict[str, Any]:
    rng = random.Random(seed_)
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=conns, max_keepalive_connections=conns)
    lat: list[float] = []
    lag: list[float] = []
    statuses: dict[str, int] = {}
    async with httpx.AsyncClient(
        base_url=base_url, limits=limits, timeout=5.0, headers=headers, trust_env=False
    ) as client:
        warm_path = "/health" if kind != "peer" else "/v1/chat/completions"
        warm = [
            client.get(warm_path)
            if kind != "peer"
            else client.post(warm_path, json={"model": "m", "messages": []})
            for _ in range(conns)
        ]
        await asyncio.gather(*warm, return_exceptions=True)

        async def one(ts: float) -> None:
            uid = rng.choice(ids)
            try:
                if kind == "health":
                    r = await client.get("/health")
                elif kind == "features":
                    r = await client.get(f"/v1/users/{uid}/features")
                elif kind == "recommend":
                    r = await client.post("/v1/recommend", json={"user_id": uid})
                else:  # the orchestrator peer directly, with the body the API would send
                    r = await client.post(
                        "/v1/chat/completions",
                        json={
                            "model": "tip-generator",
                            "messages": [{"role": "user", "content": "x" * 1500}],
                        },
                    )
                await r.aread()
                key = str(r.status_code)
            except Exception as exc:  # counted; a phase never dies on one request
                key = type(exc).__name__
            lat.append((time.perf_counter() - ts) * 1000)
            statuses[key] = statuses.get(key, 0) + 1

        n = int(rate * duration)
        t0 = time.perf_counter() + (start_wall - time.time()) + offset
        tasks = []
        for i in range(n):
            ts = t0 + i / rate
            d = ts - time.perf_counter()
            if d > 0:
                await asyncio.sleep(d)
            lag.append((time.perf_counter() - ts) * 1000)
            tasks.append(asyncio.create_task(one(ts)))
        sent_done = time.perf_counter()
        _done, pending = await asyncio.wait(tasks, timeout=5.0) if tasks else (set(), set())
        for task in pending:
            task.cancel()
        if pending:
            statuses["unfinished"] = len(pending)
    return {"lat": lat, "lag": lag, "statuses": statuses, "scheduled": n, "span": sent_done - t0}


BATCH_SIZE = 100


def _request(kind: str, uid: str, token: str) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n"
    if kind == "health":
        return b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    if kind == "features":
        return (f"GET /v1/users/{uid}/features HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n").encode()
    if kind == "recommend":
        body = json.dumps({"user_id": uid}).encode()
        path = "/v1/recommend"
    elif kind == "batch":
        # 100 of the first 1,000 seeded users, varying with the drawn user.
        n = int(uid.rsplit("-", 1)[-1])
        body = json.dumps(
            {"user_ids": [f"u-{(n * 31 + k * 101) % 1000}" for k in range(BATCH_SIZE)]}
        ).encode()
        path = "/v1/features/batch"
    else:
        body = json.dumps(
            {"model": "tip-generator", "messages": [{"role": "user", "content": "x" * 1500}]}
        ).encode()
        path = "/v1/chat/completions"
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json"
        f"\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _load_raw(
    base_url: str,
    kind: str,
    rate: float,
    duration: float,
    offset: float,
    start_wall: float,
    ids: list[str],
    token: str,
    conns: int,
    seed_: int,
) -> dict[str, Any]:
    """The same open-loop schedule as `_load`, over `conns` keep-alive sockets speaking
    minimal HTTP/1.1 (Content-Length bodies only): a far cheaper client than httpx, so the
    generator itself stays on schedule at higher rates."""
    rng = random.Random(seed_)
    host, port = base_url.rsplit("//", 1)[1].rsplit(":", 1)
    lat: list[float] = []
    lag: list[float] = []
    statuses: dict[str, int] = {}
    q: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        while True:
            item = await q.get()
            if item is None:
                q.task_done()
                break
            ts, req = item
            try:
                writer.write(req)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                key = head[9:12].decode()
            except Exception as exc:  # counted; reconnect and go on
                key = type(exc).__name__
                writer.close()
                reader, writer = await asyncio.open_connection(host, int(port))
            lat.append((time.perf_counter() - ts) * 1000)
            statuses[key] = statuses.get(key, 0) + 1
            q.task_done()
        writer.close()

    workers = [asyncio.create_task(connection()) for _ in range(conns)]
    n = int(rate * duration)
    t0 = time.perf_counter() + (start_wall - time.time()) + offset
    for i in range(n):
        ts = t0 + i / rate
        d = ts - time.perf_counter()
        if d > 0:
            await asyncio.sleep(d)
        lag.append((time.perf_counter() - ts) * 1000)
        q.put_nowait((ts, _request(kind, rng.choice(ids), token)))
    sent_done = time.perf_counter()
    for _ in workers:
        q.put_nowait(None)
    _, pending = await asyncio.wait(workers, timeout=5.0)
    for task in pending:
        task.cancel()
    unfinished = n - len(lat)
    if unfinished:
        statuses["unfinished"] = unfinished
    return {"lat": lat, "lag": lag, "statuses": statuses, "scheduled": n, "span": sent_done - t0}


CLIENT = {"raw": _load_raw, "httpx": _load}


def _worker(args: tuple[Any, ...], q: Any) -> None:
    client, *rest = args
    q.put(asyncio.run(CLIENT[client](*rest)))


def pct(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    k = min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


def phase(
    base_url: str,
    kind: str,
    rate: float,
    duration: float,
    ids: list[str],
    token: str,
    procs: int,
    conns: int,
    client: str = "raw",
) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    start_wall = time.time() + 0.5 + 0.2 * procs
    workers = [
        ctx.Process(
            target=_worker,
            args=(
                (
                    client,
                    base_url,
                    kind,
                    rate / procs,
                    duration,
                    k / rate,
                    start_wall,
                    ids,
                    token,
                    conns,
                    random.randrange(1 << 30),
                ),
                q,
            ),
        )
        for k in range(procs)
    ]
    for w in workers:
        w.start()
    parts = [q.get(timeout=duration + 60) for _ in workers]
    for w in workers:
        w.join(timeout=10)
    lat = [x for p in parts for x in p["lat"]]
    lag = [x for p in parts for x in p["lag"]]
    statuses: dict[str, int] = {}
    for p in parts:
        for k, v in p["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    scheduled = sum(p["scheduled"] for p in parts)
    ok = statuses.get("200", 0)
    return {
        "kind": kind,
        "rate": rate,
        "duration": duration,
        "scheduled": scheduled,
        "ok": ok,
        "errors": scheduled - ok,
        "statuses": statuses,
        "achieved": ok / duration if duration else 0.0,
        "p50": pct(lat, 50),
        "p90": pct(lat, 90),
        "p99": pct(lat, 99),
        "max": max(lat or [0]),
        "lag_p99": pct(lag, 99),
        "lag_max": max(lag or [0]),
    }


def show(r: dict[str, Any]) -> str:
    return (
        f"{r['kind']:<9} {r['rate']:>6.0f}/s x {r['duration']:>4.0f}s  ok {r['ok']:>6}/"
        f"{r['scheduled']:<6} p50 {r['p50']:6.2f}  p90 {r['p90']:6.2f}  p99 {r['p99']:7.2f}"
        f"  max {r['max']:7.2f} ms  send-lag p99 {r['lag_p99']:5.2f} ms"
        + (f"  API CPU {r['api_cpu_ms_per_req']:.2f} ms/req" if "api_cpu_ms_per_req" in r else "")
        + (f"  {r['statuses']}" if r["errors"] else "")
    )


# -- the API process -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_api(
    env: dict[str, str], port: int, log_path: Path, profile: Path | None = None
) -> subprocess.Popen[bytes]:
    log = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    argv = ["serve", "--port", str(port), "--log-level", "warning"]
    if profile:
        # uvicorn re-raises SIGTERM after its shutdown with the handler it found at start;
        # this one dumps the profile first (`python -m cProfile` would die without writing).
        code = (
            "import cProfile, signal, sys\n"
            "prof = cProfile.Profile()\n"
            "def stop(*_):\n"
            f"    prof.disable(); prof.dump_stats({str(profile)!r}); sys.exit(0)\n"
            "signal.signal(signal.SIGTERM, stop)\n"
            "from oo_features.cli import main\n"
            f"prof.enable(); main({argv!r})\n"
        )
        cmd = [sys.executable, "-c", code]
    else:
        cmd = [sys.executable, "-m", "oo_features.cli", *argv]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited ({proc.returncode}); see {log_path}")
        try:
            if (
                httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5, trust_env=False).status_code
                == 200
            ):
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError(f"the API did not become ready; see {log_path}")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape(base_url: str) -> dict[str, float]:
    """The /metrics samples this bench reads, by name + labels."""
    text = httpx.get(base_url + "/metrics", timeout=5, trust_env=False).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            out[name] = float(value)
    return out


def delta(
    a: dict[str, float], b: dict[str, float], prefix: str, must: str = ""
) -> dict[str, float]:
    return {k: b[k] - a.get(k, 0.0) for k in b if k.startswith(prefix) and must in k}


def hist_summary(d: dict[str, float], name: str, must: str) -> str:
    count = sum(v for k, v in d.items() if k.startswith(name + "_count") and must in k)
    total = sum(v for k, v in d.items() if k.startswith(name + "_sum") and must in k)
    le5 = sum(
        v
        for k, v in d.items()
        if k.startswith(name + "_bucket") and must in k and 'le="0.005"' in k
    )
    le10 = sum(
        v for k, v in d.items() if k.startswith(name + "_bucket") and must in k and 'le="0.01"' in k
    )
    if not count:
        return "no samples"
    return (
        f"n {count:.0f}, mean {total / count * 1000:.2f} ms, <=5 ms {le5 / count:.1%}, "
        f"<=10 ms {le10 / count:.1%}"
    )


# -- in-process breakdown --------------------------------------------------------------------


def breakdown(store_url: str, key_prefix: str, ids: list[str], n: int) -> dict[str, tuple]:
    from serving.api.deps import get_manifests
    from serving.api.models import FeaturesOut
    from serving.api.routes.users import _agent_out
    from serving.prompt import assemble_prompt
    from serving.tips import eligible_agents, fresh_snippets

    store = open_store(store_url, key_prefix=key_prefix)
    registered = get_manifests()
    rng = random.Random(7)
    t_read, t_build, t_prompt = [], [], []
    for _ in range(n):
        uid = rng.choice(ids)
        now = time.time_ns() // 1_000_000
        t = time.perf_counter()
        user = store.read_user(uid, now_ms=now)
        t_read.append((time.perf_counter() - t) * 1000)
        assert user is not None
        t = time.perf_counter()
        out = FeaturesOut(
            user_id=uid,
            agents={
                a.agent_id: _agent_out(a, now_ms=now) for a in eligible_agents(user, registered)
            },
            feedback=user.feedback,
        )
        out.model_dump_json()
        t_build.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        assemble_prompt(
            fresh_snippets(eligible_agents(user, registered), registered, now_ms=now), None
        )
        t_prompt.append((time.perf_counter() - t) * 1000)
    store.close()
    return {
        name: (statistics.median(v), pct(v, 99))
        for name, v in (
            ("store.read_user (Redis RTT + decode)", t_read),
            ("FeaturesOut build + JSON", t_build),
            ("eligible/fresh snippets + assemble_prompt", t_prompt),
        )
    }


# -- cleanup ---------------------------------------------------------------------------------


def cleanup(store_url: str, key_prefix: str, bootstrap: str | None, topic_prefix: str) -> None:
    from oo_features.localservices import delete_keys, delete_topics

    delete_keys(store_url, f"{key_prefix}:")
    if bootstrap:
        delete_topics(bootstrap, topic_prefix, timeout_s=30)


# -- issue 12: batch reads and the tip ledger's cost ------------------------------------------


def loop_phases(
    args: argparse.Namespace,
    env: dict[str, str],
    tmp: Path,
    base: str,
    api: subprocess.Popen[bytes],
    run: Any,
) -> dict[str, Any]:
    """Batch of 100 at 20/s (with a /health baseline); then recommend at 200/s on this API
    (ledger on) and on a second one with the ledger off, interleaved `args.rounds` times."""
    out: dict[str, Any] = {}
    print("L1. POST /v1/features/batch, 100 users, 20/s")
    out["health_20"] = run("health", 20, args.duration)
    out["batch_20"] = run("batch", 20, args.duration)
    if args.rounds == 0:
        return out
    port = free_port()
    off_env = {**env, "OO_LEDGER_RETENTION_DAYS": "0"}
    off = start_api(off_env, port, tmp / "api-ledger-off.log")
    off_base = f"http://127.0.0.1:{port}"
    try:
        run("recommend", 100, 3, url=off_base)  # warm-up
        print(f"L2. POST /v1/recommend {args.ledger_rate}/s, ledger off / on, interleaved")
        pairs = []
        rate = args.ledger_rate
        for i in range(args.rounds):
            c0 = cpu_s(off.pid)
            r_off = run("recommend", rate, args.duration, url=off_base)
            r_off["api_cpu_ms_per_req"] = (cpu_s(off.pid) - c0) * 1000 / max(1, r_off["scheduled"])
            r_on = run("recommend", rate, args.duration)
            pairs.append({"off": r_off, "on": r_on})
            print(
                f"  round {i + 1}: p99 off {r_off['p99']:.2f} ms, on {r_on['p99']:.2f} ms; API CPU "
                f"per request off {r_off['api_cpu_ms_per_req']:.2f} ms, "
                f"on {r_on['api_cpu_ms_per_req']:.2f} ms"
            )
        out["ledger_pairs"] = pairs
        med = statistics.median
        p99_off = med(p["off"]["p99"] for p in pairs)
        p99_on = med(p["on"]["p99"] for p in pairs)
        out["ledger_p99_median_off_on"] = (p99_off, p99_on)
        print(
            f"summary: batch p99 {out['batch_20']['p99']:.2f} ms (health baseline p99 "
            f"{out['health_20']['p99']:.2f}); recommend p99 median off {p99_off:.2f} ms, on "
            f"{p99_on:.2f} ms, ledger adds {p99_on - p99_off:+.2f} ms"
        )
    finally:
        off.send_signal(signal.SIGTERM)
        try:
            off.wait(timeout=20)
        except subprocess.TimeoutExpired:
            off.kill()
    return out


# -- main ------------------------------------------------------------------------------------


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
        "ledger's cost on POST /v1/recommend at 200/s (a second API with "
        "OO_LEDGER_RETENTION_DAYS=0, phases interleaved off/on --rounds times)",
    )
    ap.add_argument("--rounds", type=int, default=3, help="--loop: off/on pairs (default 3)")
    ap.add_argument(
        "--ledger-rate", type=float, default=200.0, help="--loop: recommend rate (default 200/s)"
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
    try:
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
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        api = start_api(env, port, tmp / "api.log", args.profile)
        print(f"API pid {api.pid} on {base}; peer {peer_url}; log {tmp / 'api.log'}")

        def run(kind: str, rate: float, duration: float, url: str = base) -> dict[str, Any]:
            c0 = cpu_s(api.pid)
            r = phase(url, kind, rate, duration, ids, token, args.procs, args.conns, args.client)
            r["api_cpu_ms_per_req"] = (cpu_s(api.pid) - c0) * 1000 / max(1, r["scheduled"])
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
        if args.profile and args.profile.exists():
            import pstats

            print(f"\nAPI cProfile ({args.profile}), top 30 by cumulative time:")
            pstats.Stats(str(args.profile)).sort_stats("cumulative").print_stats(30)
            pstats.Stats(str(args.profile)).sort_stats("tottime").print_stats(20)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
