"""`oo-features ledger export [--since T] [--out FILE]`: the tip ledger as JSON lines.

One line per served tip still kept (`OO_LEDGER_RETENTION_DAYS`) in the store at
`OO_STORE_URL`: what it was built from (per contributing agent: id, version, parameters and
snippet text as used; prompt version, model alias, fallback reason, orchestrator latency),
the tip itself and its reactions. Shape: `connectors.store.ledger.render`. Users one after
the other, in time order within a user. Deleted users have no lines; agents whose consent
was revoked are listed with `"removed": "consent"` and no values.

Exit status: 0; 2 when `--since` is not an RFC 3339 instant or the store cannot be read.
"""

from __future__ import annotations

import argparse
import sys

from oo_features.errors import CommandError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ledger",
        help="the tip ledger: what each served tip was built from, and its reactions",
        description="Work with the tip ledger kept in the feature store (OO_STORE_URL).",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = actions.add_parser(
        "export",
        help="write one JSON line per kept tip, with its reactions",
        description="Write every tip still in the ledger (shown at or after --since) as one "
        "JSON line with what it was built from and its reactions.",
    )
    export.add_argument(
        "--since",
        help="only tips shown at or after this RFC 3339 instant (e.g. 2026-01-31T00:00:00Z)",
    )
    export.add_argument("--out", default="-", help="the file to write ('-', the default: stdout)")
    export.add_argument("--store-url", help="override OO_STORE_URL")


def parse_instant(text: str) -> int:
    """Epoch ms of an RFC 3339 instant with an offset; `ValueError` says what was expected."""
    from datetime import datetime

    try:
        when = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise ValueError(
            f"--since: expected an RFC 3339 instant like 2026-01-31T00:00:00Z; got {text!r}"
        ) from None
    if when.tzinfo is None:
        raise ValueError(f"--since: the instant needs an offset (Z or +hh:mm); got {text!r}")
    return int(when.timestamp() * 1000)


def run(args: argparse.Namespace) -> int:
    import json

    from connectors import clock
    from connectors.exceptions import StoreError
    from connectors.store import open_store
    from oo_features.commands import settings_from

    settings = settings_from(args)
    try:
        since_ms = None if args.since is None else parse_instant(args.since)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    url = settings.store_url
    to_stdout = args.out == "-"
    written = 0
    try:
        store = open_store(
            url, key_prefix=settings.key_prefix, ledger_url=settings.ledger_store_url
        )
    except StoreError as exc:
        raise CommandError(str(exc)) from exc
    out = sys.stdout if to_stdout else open(args.out, "w", encoding="utf-8")  # noqa: SIM115
    try:
        lines = store.ledger_export(
            since_ms=since_ms,
            now_ms=clock.now_ms(),
            retention_ms=settings.ledger_retention_ms,
        )
        for line in lines:
            out.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
            written += 1
    except StoreError as exc:
        raise CommandError(f"the ledger could not be read: {exc}") from exc
    finally:
        if not to_stdout:
            out.close()
        store.close()
    print(f"exported {written} tips", file=sys.stderr if to_stdout else sys.stdout)
    return 0
