"""`bench/flow.py --freshness`: a paced producer process, the flow in tail mode, and the
time from Kafka timestamp to the feature visible in Redis per sampled event."""

from __future__ import annotations

import argparse
import multiprocessing as mp
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from bench.flow_loops import _events
from bench.flow_run import (
    P99_TARGET_MS,
    ROOT,
    _flow_cmd,
    _proc_cpu,
    _redis,
    cleanup,
)
from connectors import (
    clock,
    topics,
)
from connectors.kafka import ensure_topics, producer_config

# ------------------------------------------------------------------------------- freshness

PACING_TICK_S = 0.002
"""The paced producer sends what is due at most every this many seconds (in a burst)."""


def _paced_producer(
    bootstrap: str,
    prefix: str,
    payloads: list[bytes],
    rate: float,
    warmup_n: int,
    sample_every: int,
    queue: Any,
) -> None:
    """Child process: produce `payloads` at `rate`/s, occurred_at = now; report samples.

    Kept cheap so that the load generator does not take the CPU the flow is measured on (it
    shares the machine): the events are parsed and their topics chosen before the clock
    starts, and the loop produces every event that is due, then sleeps until the next one.
    """
    from proto import events_pb2 as pb

    # The engine's producer settings (`EventProducer`'s, as the integrations publish with):
    # linger 20 ms, not 5, halves the broker's CPU per event (0.19 -> 0.11 cores at 3,000/s),
    # CPU the flow measured here shares 2 cores with; the linger counts in the latency.
    producer = Producer(producer_config(bootstrap))
    events = []
    for raw in payloads:
        event = pb.Event()
        event.ParseFromString(raw)
        events.append((event, topics.topic_for(event, prefix=prefix), event.user_id.encode()))
    produce, now_ms = producer.produce, clock.now_ms
    n = len(events)
    started, cpu_started = time.perf_counter(), time.process_time()
    late_max = 0.0
    i = 0
    while i < n:
        now = time.perf_counter() - started
        due = min(n, int(now * rate) + 1)  # events whose scheduled time has come
        if due <= i:
            # Sleep at least PACING_TICK_S: a wake-up per event (every 0.2 ms at 5,000/s)
            # cost the generator more CPU than producing; events are stamped when sent.
            time.sleep(max(i / rate - now, PACING_TICK_S))
            continue
        late_max = max(late_max, now - i / rate)
        while i < due:
            event, topic, key = events[i]
            stamp = now_ms()
            event.occurred_at.FromMilliseconds(stamp)
            produce(topic, event.SerializeToString(), key, timestamp=stamp)
            if i >= warmup_n and (i - warmup_n) % sample_every == 0:
                queue.put((event.user_id, stamp))
            i += 1
        producer.poll(0)
    elapsed = time.perf_counter() - started
    left = producer.flush(30)
    queue.put(("__done__", n, elapsed, late_max, left, time.process_time() - cpu_started))


# Every sampled user's newest_ingest_ms in one command: the poller's own cost stays small
# (one request a cycle however many samples wait), so it does not slow what it measures.
_NEWEST_INGEST = """
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('HGET', key, 'newest_ingest_ms') or false end
return out
"""


def _service_pids(bootstrap: str, store_url: str) -> dict[str, int]:
    """Pids of the local Kafka broker and Redis server when they are the ones measured against
    (their CPU is part of what a tail-mode event costs the machine)."""
    from oo_features.services import status

    pids: dict[str, int] = {}
    for service in status():
        if service.pid and service.running and service.address in (bootstrap, store_url):
            pids[service.name] = service.pid
    return pids


def freshness(args: argparse.Namespace, bootstrap: str, store_url: str) -> int:
    run = uuid.uuid4().hex[:8]
    prefix, kp = f"bfresh{run}.", f"bfresh{run}"
    log = Path(tempfile.mkdtemp(prefix="oo-bench-fresh-")) / "flow.log"
    total_s = args.warmup + args.duration
    n = int(args.rate * total_s)
    warmup_n = int(args.rate * args.warmup)
    print(
        f"run {run}: {args.rate:,.0f} events/s for {args.warmup:g} s warm-up + {args.duration:g} s "
        f"measured ({n:,} events, {args.users:,} users), sample every {args.sample_every}th event"
    )
    payloads = [e.SerializeToString() for e in _events(n, args.users, args.seed)]
    ensure_topics(
        bootstrap,
        topics.engine_topics(prefix),
        args.partitions,
    )
    r = _redis(store_url)
    newest = r.register_script(_NEWEST_INGEST)
    ctx = mp.get_context("spawn")
    flow = subprocess.Popen(
        _flow_cmd(
            bootstrap,
            store_url,
            prefix,
            kp,
            stop=False,
            extra=[
                "--epoch-interval",
                str(args.epoch_interval),
                "--flush-interval",
                str(args.flush_interval),
            ],
        ),
        cwd=ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        # readiness: one probe event must become visible before the paced run starts
        from proto import events_pb2 as pb

        probe = pb.Event()
        probe.ParseFromString(payloads[0])
        probe.user_id, probe.event_id = "probe", "probe-1"
        probe.occurred_at.FromMilliseconds(clock.now_ms())
        p = Producer(producer_config(bootstrap))
        topic = topics.topic_for(probe, prefix=prefix)
        p.produce(topic, probe.SerializeToString(), b"probe")
        p.flush(10)
        t0 = time.perf_counter()
        while r.hget(f"{kp}:{{probe}}:meta", "newest_ingest_ms") is None:
            if flow.poll() is not None:
                raise SystemExit(f"flow exited {flow.returncode}:\n{log.read_text()[-3000:]}")
            if time.perf_counter() - t0 > 90:
                raise SystemExit("flow did not write the probe within 90 s")
            time.sleep(0.05)
        print(f"  flow ready (probe visible after {time.perf_counter() - t0:.1f} s)")

        queue = ctx.Queue()
        child = ctx.Process(
            target=_paced_producer,
            args=(bootstrap, prefix, payloads, args.rate, warmup_n, args.sample_every, queue),
        )
        child.start()
        pending: dict[str, list[int]] = {}
        flow_cpu = 0.0
        latencies: list[int] = []
        cycles: list[float] = []
        done: tuple[Any, ...] | None = None
        deadline = None
        services = _service_pids(bootstrap, store_url)
        services_cpu0 = {name: _proc_cpu(pid) for name, pid in services.items()}
        services_cpu: dict[str, float] = {}
        cpu0, wall0, own0 = _proc_cpu(flow.pid), time.perf_counter(), time.process_time()
        poller_cpu = 0.0
        next_poll = time.perf_counter()
        while True:
            pause = next_poll - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            next_poll = time.perf_counter() + args.poll_interval
            while True:
                try:
                    item = queue.get_nowait()
                except Exception:
                    break
                if item[0] == "__done__":
                    done = item
                    window = time.perf_counter() - wall0
                    flow_cpu = (_proc_cpu(flow.pid) - cpu0) / window
                    poller_cpu = (time.process_time() - own0) / window
                    services_cpu = {
                        name: (_proc_cpu(pid) - services_cpu0[name]) / window
                        for name, pid in services.items()
                    }
                    deadline = time.monotonic() + 30
                else:
                    pending.setdefault(item[0], []).append(item[1])
            if pending:
                users = list(pending)
                sent = time.perf_counter()
                replies = newest(keys=[f"{kp}:{{{uid}}}:meta" for uid in users])
                seen_ms = clock.now_ms()
                cycles.append(time.perf_counter() - sent)
                for uid, value in zip(users, replies, strict=True):
                    if value is None:
                        continue
                    stored = int(value)
                    waiting = pending[uid]
                    keep = [ts for ts in waiting if ts > stored]
                    latencies.extend(seen_ms - ts for ts in waiting if ts <= stored)
                    if keep:
                        pending[uid] = keep
                    else:
                        del pending[uid]
            if done is not None and (not pending or time.monotonic() > (deadline or 0)):
                break
            if flow.poll() is not None:
                raise SystemExit(f"flow exited {flow.returncode}:\n{log.read_text()[-3000:]}")
        child.join(10)
    finally:
        flow.send_signal(signal.SIGINT)
        try:
            flow.wait(15)
        except subprocess.TimeoutExpired:
            flow.kill()
            flow.wait()
        if not args.keep:
            cleanup(bootstrap, store_url, prefix.rstrip("."))

    assert done is not None
    _, produced, elapsed, late_max, left, producer_cpu_s = done
    missing = sum(len(v) for v in pending.values())
    latencies.sort()

    def pct(q: float) -> float:
        return float(latencies[min(len(latencies) - 1, int(q * len(latencies)))])

    cycles.sort()
    print(
        f"  produced {produced:,} events in {elapsed:.1f} s = {produced / elapsed:,.0f}/s "
        f"(max pacing lag {1000 * late_max:.1f} ms; unflushed {left}); flow process used "
        f"{flow_cpu:.2f} cores meanwhile, the producer {producer_cpu_s / elapsed:.2f}, "
        f"this poller {poller_cpu:.2f}"
        + "".join(f", {name} {cores:.2f}" for name, cores in services_cpu.items())
    )
    print(
        f"  samples: {len(latencies):,} measured, {missing} never seen within 30 s; "
        f"poll cycle median {1000 * cycles[len(cycles) // 2]:.2f} ms, "
        f"p99 {1000 * cycles[int(0.99 * len(cycles))]:.2f} ms"
    )
    if not latencies:
        print("freshness: no samples")
        return 1
    p50, p90, p99 = pct(0.50), pct(0.90), pct(0.99)
    print()
    print(
        f"freshness (visible in Redis - Kafka timestamp): p50 {p50:.0f} ms, p90 {p90:.0f} ms, "
        f"p99 {p99:.0f} ms, max {latencies[-1]:.0f} ms; target p99 < {P99_TARGET_MS} ms: "
        f"{'met' if p99 < P99_TARGET_MS and not missing else 'MISSED'}"
    )
    return 0 if p99 < P99_TARGET_MS and not missing else 1
