"""Size of one user's `UserState` as the flow snapshots it (pickle, highest protocol).

Takes a realistic year of one user from the generator (`oo_features.generate`, 365 days):
the user is picked among the first `--scan` generator users as the one with the most
projects (ties: most events), never deleted, so the state holds a full year. Folds the
events in order with `UserState.apply` and prints the pickled size after 1, 3, 6 and 12
months, with what the state holds (events still remembered for de-duplication, open tasks
of the overdue agent...), to show it is bounded by the windows, not by history.
Target: < 16 KB after a year.

    .venv/bin/python bench/state_size.py
    .venv/bin/python bench/state_size.py --user 12       # a given generator user
    .venv/bin/python bench/state_size.py --days 730      # two years: does it keep growing?
"""

from __future__ import annotations

import argparse
import datetime as dt
import pickle
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features.model import Incoming
from features.state import UserState
from oo_features.generate import generate_events
from oo_features.generate.people import (
    _start_date,
    _User,  # the generator's simulated person: traits only, to pick a user without generating all
)

TARGET_BYTES = 16 * 1024
DAYS = 365
CHECKPOINTS_MONTHS = (1, 3, 6, 12)


def _pick(seed: int, scan: int, days: int) -> int:
    start = _start_date(None, days)
    best: tuple[int, float, int] | None = None
    for i in range(scan):
        u = _User(i, seed, days, start)
        if u.delete_day >= 0:
            continue
        key = (len(u.projects), u.lam, i)  # more projects, then more tasks a day
        if best is None or key[:2] > best[:2]:
            best = key
    assert best is not None
    return best[2]


def _size(state: UserState) -> int:
    return len(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))


def _parts(state: UserState) -> str:
    """Bytes of the largest parts of the state, to see what holds the size."""
    parts = {f"agent:{aid}": _size_of(agent) for aid, agent in state.agents.items()}
    parts["seen"] = _size_of(state.seen)
    parts["tips"] = _size_of(state.tips)
    top = sorted(parts.items(), key=lambda kv: -kv[1])[:4]
    return ", ".join(f"{k} {v:,}" for k, v in top)


def _size_of(obj: object) -> int:
    return len(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--user", type=int, help="generator user index (default: picked, see above)"
    )
    parser.add_argument("--days", type=int, default=DAYS, help="history length (default a year)")
    parser.add_argument("--scan", type=int, default=40, help="users to consider when picking")
    args = parser.parse_args(argv)

    index = _pick(args.seed, args.scan, args.days) if args.user is None else args.user
    uid = f"u{index:05d}"
    t0 = time.perf_counter()
    events = [e for e in generate_events(index + 1, args.days, args.seed) if e.user_id == uid]
    projects = {
        getattr(e, k).project_id
        for e in events
        for k in ("task_created", "task_completed", "task_updated")
        if e.WhichOneof("payload") == k and getattr(e, k).project_id
    }
    first_ms = events[0].occurred_at.ToMilliseconds()
    print(
        f"user {uid} (seed {args.seed}): {len(events):,} events over {DAYS} days, "
        f"{len(projects)} projects; generated in {time.perf_counter() - t0:.1f} s"
    )

    state = UserState(uid)
    months = [*CHECKPOINTS_MONTHS, *range(18, args.days * 12 // 365 + 1, 6)]
    marks = [(m, first_ms + int(m * 365.25 / 12 * 86_400_000)) for m in months]
    sizes: list[tuple[int, int, int]] = []
    applied = 0
    fold_s = 0.0
    for event in events:
        while marks and event.occurred_at.ToMilliseconds() >= marks[0][1]:
            sizes.append((marks[0][0], applied, _size(state)))
            print(
                f"  after {marks[0][0]:>2} months ({applied:>5,} events): {sizes[-1][2]:>6,} bytes "
                f"[{_parts(state)}]; seen {len(state.seen)}, tips {len(state.tips)}"
            )
            marks.pop(0)
        t = time.perf_counter()
        state.apply(Incoming.of(event))
        fold_s += time.perf_counter() - t
        applied += 1
    for m, _ in marks:  # the 12-month mark falls after the last event
        sizes.append((m, applied, _size(state)))
        print(
            f"  after {m:>2} months ({applied:>5,} events): {sizes[-1][2]:>6,} bytes "
            f"[{_parts(state)}]; seen {len(state.seen)}, tips {len(state.tips)}"
        )
    t = time.perf_counter()
    for _ in range(200):
        pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    dump_us = (time.perf_counter() - t) / 200 * 1e6
    blob = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    t = time.perf_counter()
    for _ in range(200):
        pickle.loads(blob)
    load_us = (time.perf_counter() - t) / 200 * 1e6
    final = sizes[-1][2]
    year = next(size for m, _, size in sizes if m == 12)
    print()
    print(
        f"state after a year: {year:,} bytes ({year / 1024:.1f} KB); target < 16 KB: "
        f"{'met' if year < TARGET_BYTES else 'MISSED'}; 12 months / 1 month = {year / sizes[0][2]:.2f}"
    )
    if sizes[-1][0] != 12:
        print(f"state at the end ({sizes[-1][0]} months): {final:,} bytes ({final / 1024:.1f} KB)")
    print(
        f"pickle {dump_us:.0f} us, unpickle {load_us:.0f} us; apply {1e6 * fold_s / len(events):.1f} us/event"
    )
    print(f"(date {dt.datetime.now(dt.UTC):%Y-%m-%d})")
    return 0 if year < TARGET_BYTES else 1


if __name__ == "__main__":
    sys.exit(main())
