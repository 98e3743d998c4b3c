"""`bench/flow.py`'s plumbing: endpoints, the flow subprocess and its timing, Redis probes,
clean-up, and the targets the figures are held against."""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


from connectors.batching import KAFKA_BATCH_SIZE  # noqa: E402
from connectors.store import open_store  # noqa: E402
from oo_features.services import delete_keys, delete_topics  # noqa: E402

BATCH = KAFKA_BATCH_SIZE
EVENTS_PER_USER_DAY = 10  # the generator's average
THROUGHPUT_TARGET = 50_000
RATIO_TARGET = 0.6
P99_TARGET_MS = 500


# ------------------------------------------------------------------------------- plumbing


def _endpoints(args: argparse.Namespace) -> tuple[str, str]:
    bootstrap = args.bootstrap or os.environ.get("OO_KAFKA_BOOTSTRAP")
    store_url = args.store_url or os.environ.get("OO_STORE_URL")
    if not bootstrap or not store_url or not store_url.startswith("redis"):
        from oo_features import services as oo_services

        found = oo_services.running_endpoints() or oo_services.up(echo=print)
        bootstrap = bootstrap or found.kafka_bootstrap
        if not store_url or not store_url.startswith("redis"):
            store_url = found.redis_url
    return bootstrap, store_url


def _flow_cmd(
    bootstrap: str,
    store_url: str,
    topic_prefix: str,
    key_prefix: str,
    *,
    stop: bool,
    extra: list[str],
) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "oo_features.cli",
        "flow",
        "--bootstrap",
        bootstrap,
        "--store-url",
        store_url,
        "--topic-prefix",
        topic_prefix,
        "--key-prefix",
        key_prefix,
        *extra,
    ]
    return [*cmd, "--stop-at-end"] if stop else cmd


def run_flow(cmd: list[str], log: Path) -> tuple[float, float]:
    """Run the flow to completion; (wall seconds from spawn to exit, child CPU seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with log.open("wb") as out:
        code = subprocess.call(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if code != 0:
        raise SystemExit(f"flow exited {code}; log:\n{log.read_text()[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _redis(store_url: str) -> Any:
    import redis

    return redis.Redis.from_url(store_url)


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by a running process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _server_usec(store_url: str) -> int:
    """Total microseconds Redis spent executing commands so far (INFO commandstats)."""
    stats = _redis(store_url).info("commandstats")
    return sum(int(v.get("usec", 0)) for v in stats.values() if isinstance(v, dict))


def _user_count(store_url: str, key_prefix: str) -> int:
    return int(_redis(store_url).zcard(f"{key_prefix}:users"))


def _compare(store_url: str, kp_a: str, kp_b: str, users: list[str]) -> tuple[int, int]:
    """Users whose stored agent parameters are the same under both prefixes."""
    a, b = open_store(store_url, key_prefix=kp_a), open_store(store_url, key_prefix=kp_b)
    same = 0
    for uid in users:
        ua, ub = a.read_user(uid), b.read_user(uid)
        if ua is None or ub is None:
            same += ua is None and ub is None
            continue
        # Parameters and extras only: event_time/computed_at stamp *when* a value was written,
        # which depends on how writes were coalesced, not on what the features are.
        pa = {k: (v.version, v.params, v.extras) for k, v in ua.agents.items()}
        pb_ = {k: (v.version, v.params, v.extras) for k, v in ub.agents.items()}
        same += pa == pb_
    return same, len(users)


def cleanup(bootstrap: str, store_url: str, prefix: str) -> None:
    """Delete the run's topics and keys: all of them start with `prefix`."""
    delete_topics(bootstrap, prefix, timeout_s=30)
    delete_keys(store_url, prefix)


def _timed(label: str, n_expected: int, func: Callable[..., int], *args: Any) -> float:
    cpu0, t0 = time.process_time(), time.perf_counter()
    n = func(*args)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    if n != n_expected:
        print(f"  warning: {label} saw {n:,} messages, expected {n_expected:,}")
    print(
        f"  {label:<28} {n:>10,} events {wall:7.2f} s {n / wall:>9,.0f} ev/s  (CPU {cpu / wall:.2f} cores)"
    )
    return n / wall
