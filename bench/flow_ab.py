"""Flow throughput of two checkouts, interleaved: A, B, A, B, ... over the same topics.

Pre-loads `--events` generator events (as `bench/flow.py` does: 10,000 users, topics of 4
partitions), then runs `oo-features flow --stop-at-end` alternately with the code of
`--a` and of `--b` on PYTHONPATH (each into its own keys), `--pairs` times, and prints
every run and each side's median events/s and flow CPU time per event (spawn to exit,
startup included: steadier than wall time when the machine is shared). Interleaving spreads the machine's drift over
both sides; on a shared 2-core machine compare medians, not single runs.

    .venv/bin/python bench/flow_ab.py --a /path/to/before --b . --pairs 3

Kafka and Redis: the local services (or $OO_KAFKA_BOOTSTRAP / $OO_STORE_URL).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import flow as bench  # noqa: E402  (bench/flow.py, next to this file)

from connectors import topics  # noqa: E402
from connectors.kafka import EventProducer, ensure_topics  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--a", required=True, help="checkout A (a directory on PYTHONPATH)")
    parser.add_argument("--b", required=True, help="checkout B")
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args(argv)
    ns = argparse.Namespace(bootstrap=None, store_url=None)
    bootstrap, store_url = bench._endpoints(ns)
    run = uuid.uuid4().hex[:8]
    prefix = f"bab{run}."
    producer = EventProducer(bootstrap=bootstrap, topic_prefix=prefix, partitions=args.partitions)
    t0 = time.perf_counter()
    for event in bench._events(args.events, args.users, 7):
        producer.publish(event, validate=False)
    report = producer.flush()
    producer.close()
    ensure_topics(bootstrap, [prefix + topics.DEADLETTER], args.partitions)
    print(f"pre-loaded {report.published:,} events in {time.perf_counter() - t0:.1f} s")
    log_dir = Path(tempfile.mkdtemp(prefix="oo-bench-ab-"))
    rates: dict[str, list[float]] = {"A": [], "B": []}
    cpu_us: dict[str, list[float]] = {"A": [], "B": []}
    try:
        for pair in range(args.pairs):
            for side, path in (("A", args.a), ("B", args.b)):
                kp = f"bab{run}{side}{pair}"
                cmd = bench._flow_cmd(bootstrap, store_url, prefix, kp, stop=True, extra=[])
                os.environ["PYTHONPATH"] = str(Path(path).resolve())
                wall, cpu = bench.run_flow(cmd, log_dir / f"{side}{pair}.log")
                rates[side].append(report.published / wall)
                cpu_us[side].append(cpu / report.published * 1e6)
                print(
                    f"  pair {pair + 1} {side}: {wall:6.2f} s {rates[side][-1]:>9,.0f} ev/s, "
                    f"flow CPU {cpu_us[side][-1]:.1f} us/event"
                )
        for side in ("A", "B"):
            print(
                f"{side} ({getattr(args, side.lower())}): median "
                f"{statistics.median(rates[side]):,.0f} ev/s, "
                f"{statistics.median(cpu_us[side]):.1f} us CPU/event"
            )
        a, b = statistics.median(rates["A"]), statistics.median(rates["B"])
        print(
            f"B/A: throughput {b / a:.3f}, CPU per event "
            f"{statistics.median(cpu_us['B']) / statistics.median(cpu_us['A']):.3f}"
        )
    finally:
        bench.cleanup(bootstrap, store_url, f"bab{run}")  # topics bab<run>.*, keys bab<run>*
    return 0


if __name__ == "__main__":
    sys.exit(main())
