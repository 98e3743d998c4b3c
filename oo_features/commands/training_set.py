"""`oo-features training-set EVENTS.jsonl --spine SPINE.jsonl --out OUT.jsonl`: features as of
any time, for offline evaluation and training (contract: `flows/training_set.py` and
docs/features.md, "Training data as of a time").

Exit status: 0; 1 when some event lines were rejected (listed in the rejects file, the rows
are complete otherwise); 2 when a file is missing or the spine has invalid lines (nothing is
written then).
"""

from __future__ import annotations

import argparse
import sys

from oo_features.errors import CommandError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "training-set",
        help="each spine row's features as of its instant, from an event log",
        description='For each spine line {"user_id", "as_of"} write that user\'s features '
        "computed from the events with occurred_at <= as_of (in log order), one JSON line per "
        "spine line in spine order. Users deleted anywhere in the log get no line; agents "
        "whose consent is revoked at the end of the log are left out.",
    )
    p.add_argument("events", help="event log, canonical protobuf JSON, one event per line")
    p.add_argument("--spine", required=True, help='JSON lines {"user_id", "as_of"}')
    p.add_argument("--out", required=True, help="where the rows go ('-' for stdout)")
    p.add_argument("--rejects", help="where rejected event lines go (default EVENTS.rejects.jsonl)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from connectors.jsonl import rejects_path_for
    from flows.runtime import tune_gc
    from flows.training_set import SpineError, read_spine, training_set

    tune_gc()
    if not Path(args.events).is_file():
        raise CommandError(f"event log {args.events} does not exist")
    if not Path(args.spine).is_file():
        raise CommandError(f"spine {args.spine} does not exist")
    try:
        read_spine(args.spine)  # fail before anything is written
    except SpineError as exc:
        raise CommandError(str(exc)) from exc
    to_stdout = args.out == "-"
    out = sys.stdout if to_stdout else open(args.out, "w", encoding="utf-8")  # noqa: SIM115
    try:
        report = training_set(args.events, args.spine, out, rejects_path=args.rejects)
    except (FileNotFoundError, SpineError) as exc:
        raise CommandError(str(exc)) from exc
    finally:
        if not to_stdout:
            out.close()
    rejects = rejects_path_for(args.events, args.rejects)
    print(
        f"wrote {report.rows} rows ({report.rows_left_out} left out: deleted users) from "
        f"{report.accepted} events; rejected {report.rejected}"
        + (f" (see {rejects})" if report.rejected else ""),
        file=sys.stderr if to_stdout else sys.stdout,
    )
    return 1 if report.rejected else 0
