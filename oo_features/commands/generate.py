"""`oo-features generate`: realistic synthetic events as JSONL (canonical protobuf JSON).

The data and the chaos options are described in `oo_features.generate`.
"""

from __future__ import annotations

import argparse
import sys


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1]; got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1]; got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number; got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0; got {text!r}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "generate",
        help="write realistic synthetic events as JSONL",
        description=(
            "Write realistic synthetic events (one canonical-JSON oo.events.v1.Event per line), "
            "sorted by occurred_at and deterministic per seed. Without --start the first local "
            "date is 2026-01-01 (earlier when --days > 300, so the data ends before 2026-10-29)."
        ),
    )
    parser.add_argument("--users", type=_count, required=True, help="number of users")
    parser.add_argument("--days", type=_count, required=True, help="number of local days")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--start",
        metavar="ISO_DATE",
        help="first local date, e.g. 2026-03-02 (a datetime's UTC date is used)",
    )
    parser.add_argument("--out", metavar="FILE", default="-", help="output file (default: stdout)")
    chaos = parser.add_argument_group("chaos (fractions of the base events; all 0 by default)")
    chaos.add_argument(
        "--out-of-order",
        type=_fraction,
        default=0.0,
        metavar="F",
        help="deliver this fraction late (minutes to 6 days)",
    )
    chaos.add_argument(
        "--duplicates", type=_fraction, default=0.0, metavar="F", help="re-deliver identical events"
    )
    chaos.add_argument(
        "--too-late",
        type=_fraction,
        default=0.0,
        metavar="F",
        help="add events more than 7 days older than the user's latest",
    )
    chaos.add_argument(
        "--invalid",
        type=_fraction,
        default=0.0,
        metavar="F",
        help="add lines that do not parse or do not validate",
    )
    return parser


def _parse_start(text: str | None):
    import datetime as dt

    if text is None:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise SystemExit(
            f"oo-features generate: --start: expected an ISO date; got {text!r}"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value


def run(args: argparse.Namespace) -> int:
    import datetime as dt
    import time

    from oo_features.generate import ChaosOptions, default_start, write_jsonl

    start = _parse_start(args.start)
    first = (start or default_start(args.days)).astimezone(dt.UTC).date()
    end = dt.datetime.combine(first, dt.time(), dt.UTC) + dt.timedelta(days=args.days + 1)
    if end.timestamp() > time.time() + 86_400:
        print(
            f"oo-features generate: warning: events up to {end:%Y-%m-%d} are in the future; "
            "the validator rejects occurred_at more than 1 day ahead",
            file=sys.stderr,
        )
    chaos = ChaosOptions(
        out_of_order=args.out_of_order,
        duplicates=args.duplicates,
        too_late=args.too_late,
        invalid=args.invalid,
    )
    began = time.perf_counter()
    if args.out == "-":
        stats = write_jsonl(sys.stdout, args.users, args.days, args.seed, start, chaos=chaos)
        sys.stdout.flush()
    else:
        with open(args.out, "w", encoding="utf-8", newline="\n") as fp:
            stats = write_jsonl(fp, args.users, args.days, args.seed, start, chaos=chaos)
    took = time.perf_counter() - began
    print(
        f"generated {stats.lines} lines ({stats.events} events, {stats.out_of_order} out of "
        f"order, {stats.duplicates} duplicates, {stats.too_late} too late, {stats.invalid} "
        f"invalid) for {args.users} users x {args.days} days from {first} in {took:.1f} s"
        + ("" if args.out == "-" else f" -> {args.out}"),
        file=sys.stderr,
    )
    return 0
