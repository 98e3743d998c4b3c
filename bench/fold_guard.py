"""What the fold's rollback (ADR 0011) costs: the rebuild bases `Pending.fold` pickles.

Pre-loads `--events` generator events (`--users` users) into fresh topics, then runs the plain
loop of `bench/flow.py` (b) (consume, decode, fold, the flow's write coalescing, Redis) with
`pickle.dumps` in `flows.folding` timed: bases taken per event, their share of the loop's
wall time, and the mean time of one. Both come from the same run, so the share is meaningful
even on a loaded machine; it shrinks as write windows hold more events per user.

    .venv/bin/python bench/fold_guard.py                     # 1,000,000 events, 10,000 users
    .venv/bin/python bench/fold_guard.py --events 200000 --users 2000 --runs 1
"""

from __future__ import annotations

import argparse
import importlib.util
import pickle
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectors.kafka import EventProducer  # noqa: E402
from flows import folding  # noqa: E402
from oo_features import services as oo_services  # noqa: E402


def _bench_flow() -> Any:
    spec = importlib.util.spec_from_file_location("bench_flow", ROOT / "bench" / "flow.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _TimedPickle:
    """`pickle` as `flows.folding` sees it, with `dumps` timed."""

    HIGHEST_PROTOCOL = pickle.HIGHEST_PROTOCOL
    loads = staticmethod(pickle.loads)
    count = 0
    seconds = 0.0

    @classmethod
    def dumps(cls, obj: Any, protocol: int | None = None) -> bytes:
        t0 = time.perf_counter()
        out = pickle.dumps(obj, protocol)
        cls.seconds += time.perf_counter() - t0
        cls.count += 1
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--services-dir", help="local services state dir (default: the usual)")
    args = parser.parse_args()
    flow = _bench_flow()
    endpoints = oo_services.running_endpoints(args.services_dir)
    if endpoints is None:
        raise SystemExit("no local services: run `oo-features services up` first")
    prefix = f"bench-guard-{uuid.uuid4().hex[:6]}."
    producer = EventProducer(bootstrap=endpoints.kafka_bootstrap, topic_prefix=prefix, partitions=4)
    for event in flow._events(args.events, args.users, 7):
        producer.publish(event, validate=False)
    producer.flush()
    producer.close()
    folding.pickle = _TimedPickle  # type: ignore[assignment]
    try:
        for run in range(args.runs):
            _TimedPickle.count, _TimedPickle.seconds = 0, 0.0
            key_prefix = f"bench-guard-{uuid.uuid4().hex[:6]}"
            t0 = time.perf_counter()
            n = flow.plain_loop(
                endpoints.kafka_bootstrap,
                prefix,
                endpoints.redis_url,
                key_prefix,
                flow.BATCH,
                flow.FLUSH_INTERVAL_S,
                flow.CATCHUP_FLUSH_INTERVAL_S,
            )
            wall = time.perf_counter() - t0
            bases, spent = _TimedPickle.count, _TimedPickle.seconds
            print(
                f"run {run}: {n:,} events in {wall:.1f} s ({n / wall:,.0f}/s); "
                f"{bases:,} bases ({bases / n:.3f} per event), {spent:.2f} s pickling = "
                f"{100 * spent / wall:.1f} % of the loop, {1e6 * spent / max(1, bases):.0f} us each"
            )
            oo_services.delete_keys(endpoints.redis_url, key_prefix + ":")
    finally:
        oo_services.delete_topics(endpoints.kafka_bootstrap, prefix)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
