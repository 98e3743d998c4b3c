"""`oo-features demo`: the engine end to end on one machine, in a minute.

Generates a realistic history, replays it through the same Bytewax flow into
the store, starts the API on 127.0.0.1, and shows one user's features and a
tip. Embedded by default (event-log file + SQLite); with OO_KAFKA_BOOTSTRAP and
OO_STORE_URL set it runs on the real services instead, in a namespace of its own (topics
`<OO_TOPIC_PREFIX>demo-<run>.*`, store keys `<OO_KEY_PREFIX>-demo-<run>`), so nothing of
an earlier run or of other data mixes in. The API binds 127.0.0.1:--port (default
OO_PORT, else 8000).
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="generate a history, run the flow over it, serve the API and show a tip",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--users", type=int, default=200, help="users to generate (default 200)")
    p.add_argument("--days", type=int, default=60, help="days of history per user (default 60)")
    p.add_argument(
        "--seed", type=int, default=7, help="random seed: the same seed, the same history"
    )
    p.add_argument(
        "--port", type=int, default=None, help="port of the API (default: $OO_PORT, else 8000)"
    )
    p.add_argument(
        "--workdir", default=".oo/demo", help="where the event log and embedded store go"
    )
    p.add_argument("--once", action="store_true", help="exit after showing the tip (no serving)")


def run(args: argparse.Namespace) -> int:
    from oo_features.demo import run_demo

    return run_demo(args)
