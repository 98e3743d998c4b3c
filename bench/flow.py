"""End-to-end benchmark of the streaming feature flow on a real Kafka and Redis (loopback).

Throughput (default). A fresh topic pair is pre-loaded with `--events` generator events
(`oo_features.generate.generate_events`, `--users` users, first N in delivery order) by
`EventProducer`; then, over the same topics and in this order:

  (a) bare   - one confluent-kafka consumer: consume batches of 5000 (the flow's --batch-size) + `parse_and_check`
               (decode + validate) of each value: the Python ceiling of any consumer;
  (b) plain  - one process, no Bytewax: consume 5000, decode exactly as the flow
               (`kafka_source.decode_messages`), group per user, `fold_batch` per user, one
               `RedisStore.write_batch` per batch (what the flow does, minus the dataflow);
  flow       - `python -m oo_features.cli flow --stop-at-end` (1 process, 1 worker) in a
               subprocess, timed from spawn to exit (every write has landed when it exits).
               The same command over empty topics gives the fixed startup/shutdown cost,
               reported separately ("net" excludes it).

Freshness (`--freshness`). The flow runs in tail mode in a subprocess; a child process
produces generator events at a steady `--rate` (occurred_at rewritten to "now", Kafka
timestamp set explicitly at produce time, linger.ms=5); every `--sample-every`-th event
after `--warmup` seconds is a sample (user, Kafka timestamp). This process polls Redis
(one script call reading `HGET <kp>:{user}:meta newest_ingest_ms` of every pending sample,
every `--poll-interval` = 2 ms) and records, for each sample, (time the reply showing
newest_ingest_ms >= the sample's timestamp came back) - (Kafka timestamp): an upper bound of
"feature visible in Redis - Kafka timestamp", too high by at most one poll cycle (reported).
The producer and the poller share the machine with the flow, so both are kept cheap (events
parsed before the clock starts, one Redis command a poll) and their CPU is printed; a
standalone Redis is assumed (the poll script reads keys of many hash slots).

    .venv/bin/python bench/flow.py                         # 1,000,000 events, 10,000 users
    .venv/bin/python bench/flow.py --events 50000 --users 2000   # smoke check
    .venv/bin/python bench/flow.py --profile               # + cProfile of the plain loop (b)
    .venv/bin/python bench/flow.py --freshness             # freshness only

Modules: `flow_run.py` (endpoints, the flow subprocess, Redis probes, targets), `flow_loops.py`
((a) and (b), the profile), `flow_throughput.py`, `flow_freshness.py`; this file parses the
command line.

Kafka/Redis: `--bootstrap`/`--store-url`, else $OO_KAFKA_BOOTSTRAP/$OO_STORE_URL, else the
local services (`oo_features.services`, started if needed). Topics and keys use unique
prefixes and are deleted afterwards (unless `--keep`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.flow_freshness import freshness  # noqa: E402
from bench.flow_run import BATCH, _endpoints  # noqa: E402
from bench.flow_throughput import throughput  # noqa: E402
from flows.coalescing import (  # noqa: E402
    CATCHUP_FLUSH_INTERVAL_S,
    FLUSH_INTERVAL_S,
)


def main(argv: list[str] | None = None) -> int:
    from flows.runtime import tune_gc

    tune_gc()  # the same process tuning as `oo-features flow`, so (b) and the flow compare fairly
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--events", type=int, default=1_000_000, help="events to pre-load (throughput)"
    )
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--partitions", type=int, default=4, help="partitions per event topic")
    parser.add_argument(
        "--bootstrap", help="Kafka bootstrap (default $OO_KAFKA_BOOTSTRAP or local services)"
    )
    parser.add_argument(
        "--store-url", help="redis:// URL (default $OO_STORE_URL or local services)"
    )
    parser.add_argument("--epoch-interval", type=float, default=30.0, help="passed to the flow")
    parser.add_argument(
        "--flush-interval",
        type=float,
        default=FLUSH_INTERVAL_S,
        help="passed to the flow (per-user write coalescing; default: the flow's)",
    )
    parser.add_argument(
        "--catchup-flush-interval",
        type=float,
        default=CATCHUP_FLUSH_INTERVAL_S,
        help="passed to the flow (backlog coalescing; default: the flow's)",
    )
    parser.add_argument(
        "--flow-runs",
        type=int,
        default=3,
        help="throughput: flow runs over the same topics (the median is the figure)",
    )
    parser.add_argument(
        "--freshness-overhead",
        action="store_true",
        help="also run the flow without freshness bookkeeping and print its cost",
    )
    parser.add_argument(
        "--overhead-pairs",
        type=int,
        default=3,
        help="with/without runs each for --freshness-overhead",
    )
    parser.add_argument(
        "--profile", action="store_true", help="cProfile an extra pass of the plain loop"
    )
    parser.add_argument(
        "--plain-batch",
        type=int,
        default=BATCH,
        help="also time the plain loop with batches of this many messages",
    )
    parser.add_argument("--top", type=int, default=25, help="rows of the profile's own-time table")
    parser.add_argument(
        "--freshness", action="store_true", help="run the freshness measurement only"
    )
    parser.add_argument("--rate", type=float, default=5_000, help="freshness: events per second")
    parser.add_argument("--duration", type=float, default=20, help="freshness: measured seconds")
    parser.add_argument(
        "--warmup", type=float, default=5, help="freshness: unmeasured seconds first"
    )
    parser.add_argument(
        "--sample-every", type=int, default=50, help="freshness: sample 1 event in N"
    )
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=0.002,
        help="freshness: seconds between Redis polls (the measurement's resolution)",
    )
    parser.add_argument("--keep", action="store_true", help="keep topics and keys afterwards")
    args = parser.parse_args(argv)
    bootstrap, store_url = _endpoints(args)
    print(
        f"kafka {bootstrap}, redis {store_url}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    if args.freshness:
        return freshness(args, bootstrap, store_url)
    return throughput(args, bootstrap, store_url)


if __name__ == "__main__":
    sys.exit(main())
