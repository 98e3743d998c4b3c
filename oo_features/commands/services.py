"""`oo-features services up|down|status`: the local Kafka and Redis (see `oo_features.services`).

`up` prints progress on stderr and one `export OO_KAFKA_BOOTSTRAP=... OO_STORE_URL=...`
line on stdout, so `eval "$(oo-features services up)"` points the shell at them.
`--profile cluster` runs three SASL_SSL Kafka brokers and a Redis Cluster instead (ADR 0020);
its export line adds `OO_KAFKA_PROPERTIES_FILE`. Failures print one line and exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from types import ModuleType


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "services",
        help="start, stop or inspect the local Kafka (KRaft) and Redis",
        description=(
            "Local real services for development and integration tests. State (ports, data, "
            "logs, pids, services.json) lives in $OO_SERVICES_DIR, default ./.oo/services."
        ),
    )
    parser.add_argument(
        "action", choices=("up", "down", "status"), help="up: start and wait; down: stop"
    )
    parser.add_argument(
        "--state-dir", default=None, help="state folder (default: $OO_SERVICES_DIR or .oo/services)"
    )
    parser.add_argument(
        "--timeout", type=float, default=90.0, help="seconds `up` waits for both to answer"
    )
    parser.add_argument("--json", action="store_true", help="status: print JSON")
    parser.add_argument(
        "--profile",
        choices=("single", "cluster"),
        default="single",
        help="single: one broker and one Redis (default); cluster: three SASL_SSL brokers "
        "(KRaft quorum, RF 3) and a Redis Cluster, state in <state dir>-cluster",
    )


def _echo(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from oo_features import services as oo_services
    from oo_features.errors import CommandError
    from oo_features.services import cluster

    is_cluster = getattr(args, "profile", "single") == "cluster"
    profile: ModuleType = cluster if is_cluster else oo_services
    where = (
        cluster.cluster_state_dir(args.state_dir)
        if is_cluster
        else oo_services.state_dir(args.state_dir)
    )
    # Three brokers start slower than one: the cluster never waits less than 180 s.
    timeout = max(args.timeout, 180.0) if is_cluster else args.timeout
    try:
        if args.action == "up":
            endpoints = profile.up(args.state_dir, timeout_s=timeout, echo=_echo)
            print(endpoints.export_line())
            return 0
        if args.action == "down":
            profile.down(args.state_dir, echo=_echo)
            return 0
        statuses = profile.status(args.state_dir)
    except oo_services.ServicesError as exc:  # a service that did not come up: exit 2
        raise CommandError(f"{args.action}: {exc}") from exc

    all_up = all(s.running and s.healthy for s in statuses)
    if args.json:
        print(
            json.dumps(
                {
                    "state_dir": str(where),
                    "up": all_up,
                    "services": [
                        {
                            "name": s.name,
                            "address": s.address,
                            "pid": s.pid,
                            "running": s.running,
                            "healthy": s.healthy,
                            "detail": s.detail,
                        }
                        for s in statuses
                    ],
                },
                indent=2,
            )
        )
    else:
        print(f"state  {where}")
        for s in statuses:
            word = "up" if s.running and s.healthy else ("unhealthy" if s.running else "down")
            pid = f"pid {s.pid}" if s.pid is not None else "no pid"
            print(f"{s.name:<6} {word:<9} {s.address}  {pid}  {s.detail}")
    return 0 if all_up else 1
