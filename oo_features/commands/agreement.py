"""`oo-features agreement FILE --agent SHADOW [--at N]`: a shadow version against its incumbent.

Offline, over an event log: fold it in file order (invalid lines are skipped and counted),
and at N evenly spaced points along it and at its end print, per parameter, the share of
users whose values agree (numbers within `--tolerance`, lists and maps exactly) and the
largest differences, named by user. The shadow must be registered: its package named in
`OO_AGENT_PACKAGES` (features/README.md, "Shadow versions"). Exit 0 when computed, 2 when the
file or the agent is wrong (the message says which).
"""

from __future__ import annotations

import argparse
import json
import math

from oo_features.errors import CommandError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "agreement",
        help="how often a shadow agent agrees with the agent it shadows, over an event log",
        description="Fold an event log and compare a shadow version with its incumbent, per "
        "parameter: the share of users that agree, at N points along the log and at its end.",
    )
    p.add_argument("file", help="event log, canonical protobuf JSON, one event per line")
    p.add_argument("--agent", required=True, help="the shadow agent's id")
    p.add_argument(
        "--at", type=int, default=0, metavar="N", help="also evaluate at N points along the log"
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=1e-6,
        help="numbers agree within this absolute difference (default 1e-6)",
    )
    p.add_argument("--json", action="store_true", help="print the reports as JSON")


def _show(value: object) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def run(args: argparse.Namespace) -> int:
    from connectors.jsonl import LineError, read_events
    from features.agreement import agreement_along, incumbent_of

    if args.at < 0 or not math.isfinite(args.tolerance) or args.tolerance < 0:
        raise CommandError("--at must be >= 0 and --tolerance a finite number >= 0")
    try:
        incumbent = incumbent_of(args.agent)
    except ValueError as exc:
        raise CommandError(f"--agent: {exc}") from exc
    try:
        with open(args.file, "rb") as handle:
            read = list(read_events(handle))
    except OSError as exc:
        raise CommandError(f"event log {args.file}: {exc.strerror or exc}") from exc
    events = [e for _, e in read if not isinstance(e, LineError)]
    skipped = len(read) - len(events)
    points = agreement_along(events, args.agent, points=args.at, tolerance=args.tolerance)
    if args.json:
        body = [{"events": n, **report.as_dict()} for n, report in points]
        print(json.dumps({"file": args.file, "skipped_lines": skipped, "points": body}))
        return 0
    print(
        f"agreement of {args.agent} (shadow) with {incumbent} over {args.file}: "
        f"{len(events):,} events ({skipped:,} invalid lines skipped), "
        f"numbers within {args.tolerance:g}"
    )
    for n, report in points:
        where = "end of the log" if n == len(events) else f"after {n:,} events"
        print(f"\n{where}: {report.users:,} users with both agents")
        for p in report.params():
            print(f"  {p.param:<32} {100 * p.share:6.2f} %  ({p.agreeing:,} of {p.compared:,})")
    final = points[-1][1]
    lines = [
        f"  {p.param}: user {d.user_id}: {incumbent} {_show(d.incumbent)}, "
        f"{args.agent} {_show(d.shadow)}"
        + ("" if math.isinf(d.size) else f" (differ by {d.size:.6g})")
        for p in final.params()
        for d in p.largest
    ]
    if lines:
        print("\nlargest differences at the end of the log:")
        print("\n".join(lines))
    return 0
