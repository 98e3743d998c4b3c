"""The flow on the cluster profile beside the single node, interleaved in one session (issue 15).

What it measures, with the same events pre-loaded once into each Kafka (same partitions):

  single  - `oo-features flow --stop-at-end` on the single-node broker (PLAINTEXT, RF 1);
  cluster - the same command on the cluster profile (three brokers, SASL_SSL, RF 3,
            min.insync.replicas=2, `OO_KAFKA_PROPERTIES_FILE`), 1 process;
  cluster -p 2 - the same with `--processes 2`.

Runs are interleaved (single, cluster, cluster -p 2, single, ...) `--rounds` times, each into
its own Redis keys (the single node's Redis for all: the store is not what is compared). Each
run is timed from spawn to exit, with the CPU of the flow's processes (children's rusage) and
of the brokers (/proc/<pid>/stat deltas, all brokers of the Kafka in use) over the run.
Reported: every run, the medians, and the ratio cluster/single (target >= 0.7).

    .venv/bin/python bench/cluster.py --events 200000 --users 5000 --rounds 3

Needs both profiles up (`oo-features services up` and `... up --profile cluster`; both are
started if not running). Topics and keys are deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.flow_loops import _events  # noqa: E402
from bench.flow_run import _proc_cpu  # noqa: E402
from connectors import topics  # noqa: E402
from connectors.kafka import EventProducer, ensure_topics  # noqa: E402
from connectors.kafka_config import load_properties  # noqa: E402
from oo_features import services as oo_services  # noqa: E402
from oo_features.services import cluster_admin, kafka_cluster  # noqa: E402
from oo_features.services.cluster import cluster_state_dir  # noqa: E402

RATIO_TARGET = 0.7


def _preload(bootstrap: str, extra: dict[str, str], prefix: str, args: argparse.Namespace) -> None:
    names = [prefix + topics.SIGNALS, prefix + topics.FEEDBACK, prefix + topics.DEADLETTER]
    if extra:
        config = {"bootstrap.servers": bootstrap, **extra}
        cluster_admin.create_engine_topics(config, prefix=prefix, partitions=args.partitions)
    else:
        ensure_topics(bootstrap, names, args.partitions)
    producer = EventProducer(bootstrap=bootstrap, topic_prefix=prefix, extra_config=extra or None)
    for event in _events(args.events, args.users, args.seed):
        producer.publish(event, validate=False)
    report = producer.flush()
    producer.close()
    if report.failed or report.published != args.events:
        raise SystemExit(f"pre-load failed on {bootstrap}: {report.published} published")


def _run(
    label: str, env: dict[str, str], cmd: list[str], brokers: list[int], log: Path
) -> tuple[float, float, float]:
    """(wall s, flow CPU s, brokers' CPU s) of one `flow --stop-at-end` run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    kafka0 = sum(_proc_cpu(pid) for pid in brokers)
    t0 = time.perf_counter()
    with log.open("wb") as out:
        code = subprocess.call(
            cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}
        )
    wall = time.perf_counter() - t0
    kafka = sum(_proc_cpu(pid) for pid in brokers) - kafka0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if code not in (0, 1):  # 1: something was rejected (none is, with validate=False events)
        raise SystemExit(f"{label}: flow exited {code}; log:\n{log.read_text()[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, kafka


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    single = oo_services.running_endpoints() or oo_services.up(echo=print)
    root = cluster_state_dir()
    cluster = kafka_cluster.running(root) or kafka_cluster.up(root, echo=print)
    security = load_properties(cluster.properties_file)
    prefix = f"bc{uuid.uuid4().hex[:6]}."
    print(f"load before: {os.getloadavg()}")
    t0 = time.perf_counter()
    _preload(single.kafka_bootstrap, {}, prefix, args)
    _preload(cluster.bootstrap, security, prefix, args)
    print(f"pre-loaded {args.events:,} events into each Kafka in {time.perf_counter() - t0:.0f} s")

    base = {"OO_TOPIC_PREFIX": prefix, "OO_STORE_URL": single.redis_url}
    targets: dict[str, tuple[dict[str, str], list[str], list[int]]] = {
        "single": (
            {**base, "OO_KAFKA_BOOTSTRAP": single.kafka_bootstrap},
            [],
            [p for p in [single.kafka_pid] if p is not None],
        ),
        "cluster": (
            {
                **base,
                "OO_KAFKA_BOOTSTRAP": cluster.bootstrap,
                "OO_KAFKA_PROPERTIES_FILE": str(cluster.properties_file),
            },
            [],
            [p for p in cluster.pids.values() if p is not None],
        ),
    }
    layouts = [("single", []), ("cluster", []), ("cluster -p 2", ["--processes", "2"])]
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _ in layouts}
    logs = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    key_prefixes = []
    try:
        for round_ in range(args.rounds):
            for name, flags in layouts:
                env, _, brokers = targets[name.split()[0]]
                kp = f"{prefix.rstrip('.')}{name.replace(' ', '').replace('-', '')}{round_}"
                key_prefixes.append(kp)
                cmd = [sys.executable, "-m", "oo_features.cli", "flow", "--stop-at-end", *flags]
                wall, cpu, kafka = _run(
                    name, {**env, "OO_KEY_PREFIX": kp}, cmd, brokers, logs / f"{kp}.log"
                )
                results[name].append((wall, cpu, kafka))
                print(
                    f"  round {round_ + 1} {name:<13} {wall:7.2f} s {args.events / wall:>9,.0f} "
                    f"ev/s  flow CPU {cpu / wall:.2f} cores  brokers CPU {kafka / wall:.2f} cores"
                )
    finally:
        for kp in key_prefixes:
            oo_services.delete_keys(single.redis_url, kp + ":")
        oo_services.delete_topics(single.kafka_bootstrap, prefix)
        os.environ["OO_KAFKA_PROPERTIES_FILE"] = str(cluster.properties_file)
        oo_services.delete_topics(cluster.bootstrap, prefix)
    print(f"load after: {os.getloadavg()}")
    medians = {}
    for name, runs in results.items():
        wall = statistics.median(r[0] for r in runs)
        medians[name] = args.events / wall
        cpu = statistics.median(r[1] / r[0] for r in runs)
        kafka = statistics.median(r[2] / r[0] for r in runs)
        print(
            f"median {name:<13} {medians[name]:>9,.0f} ev/s  flow CPU {cpu:.2f} cores  "
            f"brokers CPU {kafka:.2f} cores"
        )
    ratio = medians["cluster"] / medians["single"]
    print(
        f"ratio cluster/single: {ratio:.2f}; target {RATIO_TARGET}: "
        f"{'met' if ratio >= RATIO_TARGET else 'NOT MET'}"
    )
    print(f"cluster 2 processes / 1 process: {medians['cluster -p 2'] / medians['cluster']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
