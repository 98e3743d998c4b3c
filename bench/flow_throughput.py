"""`bench/flow.py` throughput: pre-load the topics, then (a) bare, (b) plain and the flow
subprocess over them, with the fixed start-up cost measured over empty topics."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path

from bench.flow_loops import _events, bare_loop, plain_loop, profile_plain
from bench.flow_run import (
    BATCH,
    RATIO_TARGET,
    THROUGHPUT_TARGET,
    _compare,
    _flow_cmd,
    _timed,
    _user_count,
    cleanup,
    run_flow,
)
from connectors import topics
from connectors.kafka import EventProducer, ensure_topics

# ------------------------------------------------------------------------------- throughput


def throughput(args: argparse.Namespace, bootstrap: str, store_url: str) -> int:
    run = uuid.uuid4().hex[:8]
    prefix = f"bflow{run}."
    kp_plain, kp_flow, kp_prof, kp_empty = (f"bflow{run}{s}" for s in ("p", "f", "x", "e"))
    empty_prefix = f"bflow{run}empty."
    log_dir = Path(tempfile.mkdtemp(prefix="oo-bench-flow-"))
    print(
        f"run {run}: {args.events:,} events over {args.users:,} users, topics {prefix}*, "
        f"{args.partitions} partitions per topic; CPUs: {os.cpu_count()}"
    )
    try:
        t0 = time.perf_counter()
        producer = EventProducer(
            bootstrap=bootstrap, topic_prefix=prefix, partitions=args.partitions
        )
        produced_users: set[str] = set()
        for event in _events(args.events, args.users, args.seed):
            produced_users.add(event.user_id)
            producer.publish(event, validate=False)
        report = producer.flush()
        producer.close()
        if report.failed or report.published != args.events:
            raise SystemExit(
                f"pre-load failed: {report.published} published, {len(report.failed)} failed"
            )
        ensure_topics(bootstrap, [prefix + topics.DEADLETTER], args.partitions)
        print(
            f"  pre-loaded {report.published:,} events ({len(produced_users):,} users) "
            f"in {time.perf_counter() - t0:.1f} s (generate + produce)"
        )
        n = args.events

        bare = _timed("(a) bare consume+decode", n, bare_loop, bootstrap, prefix)
        plain = _timed(
            "(b) plain loop -> Redis",
            n,
            plain_loop,
            bootstrap,
            prefix,
            store_url,
            kp_plain,
            BATCH,
            args.flush_interval,
            args.catchup_flush_interval,
        )
        if args.plain_batch != BATCH:
            _timed(
                f"(b') plain, batch {args.plain_batch}",
                n,
                plain_loop,
                bootstrap,
                prefix,
                store_url,
                kp_prof + "b",
                args.plain_batch,
            )

        extra = [
            "--epoch-interval",
            str(args.epoch_interval),
            "--flush-interval",
            str(args.flush_interval),
            "--catchup-flush-interval",
            str(args.catchup_flush_interval),
        ]
        # Several runs over the same topics, each into its own keys: this 2-core machine is
        # shared with Kafka and Redis, so one run can be several percent off; the median is the
        # figure, and every run is printed.
        runs = []
        for i in range(args.flow_runs):
            kp = kp_flow if i == 0 else f"{kp_flow}{i}"
            runs.append(
                run_flow(
                    _flow_cmd(bootstrap, store_url, prefix, kp, stop=True, extra=extra),
                    log_dir / f"flow-{i}.log",
                )
            )
        flow_wall, _flow_cpu = sorted(runs)[len(runs) // 2]
        empty_wall, _empty_cpu = run_flow(
            _flow_cmd(bootstrap, store_url, empty_prefix, kp_empty, stop=True, extra=extra),
            log_dir / "empty.log",
        )
        flow = n / flow_wall
        net = n / max(flow_wall - empty_wall, 1e-9)
        for i, (wall, cpu) in enumerate(runs):
            print(
                f"  {f'flow run {i + 1} (spawn -> exit)':<28} {n:>10,} events {wall:7.2f} s "
                f"{n / wall:>9,.0f} ev/s  (child CPU {cpu / wall:.2f} cores)"
            )
        print(
            f"  {f'flow, median of {len(runs)}':<28} {n:>10,} events {flow_wall:7.2f} s {flow:>9,.0f} ev/s"
        )
        print(f"  {'flow startup+shutdown':<28} {'(empty)':>10} {'':7}{empty_wall:7.2f} s")
        print(
            f"  {'flow net of startup':<28} {n:>10,} events {flow_wall - empty_wall:7.2f} s {net:>9,.0f} ev/s"
        )

        flow_users, plain_users = _user_count(store_url, kp_flow), _user_count(store_url, kp_plain)
        sample = sorted(produced_users)[:: max(1, len(produced_users) // 200)]
        same, total = _compare(store_url, kp_plain, kp_flow, sample)
        print(
            f"  users in store: flow {flow_users:,}, plain {plain_users:,} (produced {len(produced_users):,}); "
            f"same agent params in plain vs flow: {same}/{total} sampled users"
        )

        print()
        print(
            f"throughput: flow {flow:,.0f} events/s end to end (net of startup {net:,.0f}); "
            f"target {THROUGHPUT_TARGET:,}: {'met' if flow >= THROUGHPUT_TARGET else 'MISSED'}"
        )
        print(
            f"ratio flow/(b) plain: {flow / plain:.2f} (net {net / plain:.2f}); target {RATIO_TARGET}: "
            f"{'met' if flow / plain >= RATIO_TARGET else 'MISSED'}"
        )
        print(f"ratio (b)/(a): {plain / bare:.2f}; flow/(a): {flow / bare:.2f}")

        if args.freshness_overhead:
            # The same flow without the freshness bookkeeping (reflected users, lag samples),
            # interleaved with more runs with it, so drift on this shared machine hits both.
            walls: dict[bool, list[float]] = {True: [runs[-1][0]], False: []}
            order = [i % 2 == 1 for i in range(2 * args.overhead_pairs - 1)]  # without, with, ...
            for i, with_freshness in enumerate(order):
                flags = [*extra] if with_freshness else [*extra, "--no-freshness"]
                wall, _ = run_flow(
                    _flow_cmd(
                        bootstrap, store_url, prefix, f"{kp_prof}o{i}", stop=True, extra=flags
                    ),
                    log_dir / f"flow-overhead-{i}.log",
                )
                walls[with_freshness].append(wall)
            with_wall = sum(walls[True]) / len(walls[True])
            without_wall = sum(walls[False]) / len(walls[False])
            cost = 1 - without_wall / with_wall
            print(
                f"freshness bookkeeping: flow {n / with_wall:,.0f} ev/s with (mean of "
                f"{len(walls[True])} runs: {', '.join(f'{n / w:,.0f}' for w in walls[True])}), "
                f"{n / without_wall:,.0f} ev/s without (runs: "
                f"{', '.join(f'{n / w:,.0f}' for w in walls[False])}); cost {100 * cost:.1f}% of "
                f"throughput (target at most 5%: {'met' if cost <= 0.05 else 'MISSED'})"
            )
        if args.profile:
            profile_plain(bootstrap, prefix, store_url, kp_prof, args.top)
        ok = flow >= THROUGHPUT_TARGET and flow / plain >= RATIO_TARGET
        return 0 if ok else 1
    finally:
        if not args.keep:
            # Every topic and key prefix of this run starts with bflow<run>.
            cleanup(bootstrap, store_url, f"bflow{run}")
