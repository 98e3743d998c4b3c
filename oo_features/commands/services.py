"""`oo-features services up|down|status`: the local Kafka and Redis (see `localservices`).

`up` prints progress on stderr and one `export OO_KAFKA_BOOTSTRAP=... OO_STORE_URL=...`
line on stdout, so `eval "$(oo-features services up)"` points the shell at them.
"""

from __future__ import annotations

import argparse
import json
import sys


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


def _echo(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from oo_features import localservices
    from oo_features.errors import CommandError

    try:
        if args.action == "up":
            endpoints = localservices.up(args.state_dir, timeout_s=args.timeout, echo=_echo)
            print(endpoints.export_line())
            return 0
        if args.action == "down":
            localservices.down(args.state_dir, echo=_echo)
            return 0
    except localservices.ServicesError as exc:  # a service that did not come up: exit 2
        raise CommandError(f"{args.action}: {exc}") from exc

    statuses = localservices.status(args.state_dir)
    all_up = all(s.running and s.healthy for s in statuses)
    if args.json:
        print(
            json.dumps(
                {
                    "state_dir": str(localservices.state_dir(args.state_dir)),
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
        print(f"state  {localservices.state_dir(args.state_dir)}")
        for s in statuses:
            word = "up" if s.running and s.healthy else ("unhealthy" if s.running else "down")
            pid = f"pid {s.pid}" if s.pid is not None else "no pid"
            print(f"{s.name:<6} {word:<9} {s.address}  {pid}  {s.detail}")
    return 0 if all_up else 1
