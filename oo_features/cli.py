"""`oo-features`: one command, one subcommand per job.

Each subcommand lives in `oo_features/commands/<name>.py` with
`add_parser(subparsers)` and `run(args) -> int`; modules are imported only
when their subcommand runs, so `--help` stays fast.

Failures are one line on stderr, `oo-features <command>: error: ...`, naming what was wrong
(`oo_features.errors`; commands raise `CommandError` rather than print); usage and
configuration errors, missing files and unreachable services exit 2. No traceback unless
`--debug` (anywhere on the command line) asks for it.
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
    "ledger",
    "training-set",
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
    parser.add_argument(
        "--debug", action="store_true", help="print the traceback of an unexpected error"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"oo_features.commands.{name.replace('-', '_')}")
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    if not any(a in COMMANDS for a in argv):
        unknown = [a for a in argv if a.startswith("-") and a not in ("-h", "--help")]
        if unknown:
            # argparse would only say that COMMAND is missing.
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args = parser.parse_args(argv)
    module = importlib.import_module(f"oo_features.commands.{args.command.replace('-', '_')}")
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        from oo_features.errors import describe, report

        message, status = describe(exc)
        report(args.command, message)
        return status


if __name__ == "__main__":
    sys.exit(main())
