"""The store's write path on Redis Cluster beside one Redis (issue 15, ADR 0021).

`RedisStore.write_batch` (what the flow's store sink calls), 500 users x 5 agents a batch,
against: one `redis-server` started as `oo-features services up` starts it (AOF fsynced at
every write), and a local Redis Cluster of 3 masters + 3 replicas
(`oo_features.services.redis_cluster`, same persistence) written with the default
`wait_replicas=1` (each master's pipeline waits for its replica) and with `wait_replicas=0`.
Rounds are interleaved; prints user writes per second, medians and the ratios to one Redis.

    .venv/bin/python bench/store_cluster.py [--rounds 5] [--batches 20] [--users 500]

Every server is started under a temporary folder and stopped at the end. All of them share
this machine's cores with the benchmark process: the cluster runs six servers.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.persistence import measure  # noqa: E402
from oo_features.services import redis_cluster  # noqa: E402
from oo_features.services.redis_node import redis_argv  # noqa: E402
from tests.outage import free_port  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--users", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-store-cluster-") as folder:
        root = Path(folder)
        (root / "single").mkdir()
        port = free_port()
        single = subprocess.Popen(redis_argv("redis-server", port, root / "single"))
        try:
            cluster_url = redis_cluster.up(root, echo=lambda line: None)
            urls = {
                "redis": f"redis://127.0.0.1:{port}/0",
                "cluster": cluster_url,
                "cluster-nowait": cluster_url + "?wait_replicas=0",
            }
            results: dict[str, list[float]] = {name: [] for name in urls}
            for round_no in range(args.rounds):
                for name, url in urls.items():
                    prefix = f"b{round_no}{name.replace('-', '')}"
                    rate = measure(url, prefix, batches=args.batches, users=args.users)
                    results[name].append(rate)
                    print(f"round {round_no + 1} {name:14s} {rate:,.0f} user writes/s", flush=True)
        finally:
            redis_cluster.down(root)
            single.kill()
            single.wait()
    base = statistics.median(results["redis"])
    for name, values in results.items():
        runs = ", ".join(f"{v:,.0f}" for v in values)
        median = statistics.median(values)
        print(
            f"{name:14s} median {median:,.0f} user writes/s, {median / base:.2f} of one Redis ({runs})"
        )
    ratios = [c / r for c, r in zip(results["cluster"], results["redis"], strict=True)]
    print(f"cluster/redis per round: {', '.join(f'{r:.2f}' for r in ratios)}; "
          f"median {statistics.median(ratios):.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
