"""`oo-features`: one command, one subcommand per job.

Each subcommand lives in `oo_features/commands/<name>.py` with
`add_parser(subparsers)` and `run(args) -> int`; modules are imported only
when their subcommand runs, so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = (
    "produce",
    "flow",
    "backfill",
    "agreement",
    "export",
    "refill",
    "generate",
    "serve",
    "demo",
    "services",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oo-features", description="oO feature engine: real-time per-user features."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"oo_features.commands.{name}")
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module = importlib.import_module(f"oo_features.commands.{args.command}")
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
