"""`bench/serve.py`'s load: the orchestrator peer in its own process, the request mix, the
client processes (raw sockets or httpx) and the percentiles of one phase."""

from __future__ import annotations

import asyncio
import json
import math
import multiprocessing as mp
import random
import time
from typing import Any

import httpx

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
    keep_lat: bool = False,
) -> dict[str, Any]:
    """One open-loop phase's figures; with `keep_lat`, also every request's latency ("lat")."""
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
    out = {
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
    if keep_lat:
        out["lat"] = lat
    return out


def show(r: dict[str, Any]) -> str:
    return (
        f"{r['kind']:<9} {r['rate']:>6.0f}/s x {r['duration']:>4.0f}s  ok {r['ok']:>6}/"
        f"{r['scheduled']:<6} p50 {r['p50']:6.2f}  p90 {r['p90']:6.2f}  p99 {r['p99']:7.2f}"
        f"  max {r['max']:7.2f} ms  send-lag p99 {r['lag_p99']:5.2f} ms"
        + (f"  API CPU {r['api_cpu_ms_per_req']:.2f} ms/req" if "api_cpu_ms_per_req" in r else "")
        + (f"  {r['statuses']}" if r["errors"] else "")
    )
