"""What a restart costs in writes: `build_write` with and without dedupe (ADR 0007).

A flow that starts over an empty store skips agents whose output did not change; one that
starts over a store with users (any restart) writes every touched agent. This folds the same
generator events both ways, in batches of `--batch` events with one write per user per batch
(a small batch is like tail mode, a large one like catching up), writes them to Redis, and
prints agent writes per event and events/s of that loop.

    .venv/bin/python bench/restart_writes.py --batch 500
    .venv/bin/python bench/restart_writes.py --batch 5000

Redis: `--store-url`, else $OO_STORE_URL, else the local services. Keys are deleted afterwards.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connectors.records import Accepted
from connectors.store import open_store
from features.state import UserState
from flows.folding import Pending, build_write
from oo_features.generate import generate_events
from oo_features.services import delete_keys


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved runs of each mode")
    parser.add_argument("--store-url")
    args = parser.parse_args()
    url = args.store_url or os.environ.get("OO_STORE_URL")
    if not url:
        from oo_features import services as oo_services

        url = (oo_services.running_endpoints() or oo_services.up(echo=print)).redis_url
    source = generate_events(args.users, args.events // (args.users * 10) + 2, 7)
    events = [
        Accepted.of(e, 1_000 + i) for i, e in enumerate(itertools.islice(source, args.events))
    ]
    for dedupe in [True, False] * args.rounds:
        key_prefix = f"rw{uuid.uuid4().hex[:6]}"
        store = open_store(url, key_prefix=key_prefix)
        states: dict[str, UserState] = {}
        written: dict[str, dict[str, int]] = {}  # each user's dedupe bookkeeping
        agents = 0
        start = time.perf_counter()
        for first in range(0, len(events), args.batch):
            by_user: dict[str, list[Accepted]] = defaultdict(list)
            for item in events[first : first + args.batch]:
                by_user[item.event.user_id].append(item)
            writes = []
            for user_id, batch in by_user.items():
                state = states.setdefault(user_id, UserState(user_id))
                pending = Pending()
                pending.fold(state, batch)
                mine = written.setdefault(user_id, {}) if dedupe else None
                write = build_write(state, pending, written=mine)
                if write is not None:
                    writes.append(write)
                    agents += len(write.agents)
            store.write_batch(writes)
        took = time.perf_counter() - start
        store.close()
        delete_keys(url, key_prefix)
        print(
            f"batch {args.batch:>5}, dedupe {'on ' if dedupe else 'off'}: "
            f"{len(events) / took:8,.0f} events/s, {agents / len(events):.2f} agent writes/event"
        )


if __name__ == "__main__":
    main()
