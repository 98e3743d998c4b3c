"""Delivery trouble (`ChaosOptions`): late, duplicated, too-late and invalid deliveries
injected into the base records from a random stream of its own; `GenerateStats` counts them."""

from __future__ import annotations

import heapq
import json
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from oo_features.generate.records import _DAY, _HOUR, _NEVER_DELAYED, _SIGNAL_EXCLUDED, Record
from oo_features.generate.wire import _fmt_ts

# --------------------------------------------------------------------------- chaos


@dataclass(frozen=True, slots=True)
class ChaosOptions:
    """Fractions (of the base events) of each kind of delivery trouble; all off by default."""

    out_of_order: float = 0.0
    duplicates: float = 0.0
    too_late: float = 0.0
    invalid: float = 0.0

    def __post_init__(self) -> None:
        for name in ("out_of_order", "duplicates", "too_late", "invalid"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"chaos {name} must be a fraction in [0, 1]; got {value}")

    @property
    def active(self) -> bool:
        return bool(self.out_of_order or self.duplicates or self.too_late or self.invalid)


@dataclass(slots=True)
class GenerateStats:
    """What a generation produced; filled in while the iterator is consumed."""

    events: int = 0
    """Base events (before chaos)."""
    out_of_order: int = 0
    duplicates: int = 0
    too_late: int = 0
    invalid: int = 0
    lines: int = 0
    """Everything yielded: base + duplicates + too-late + invalid."""


def _chaos(
    records: Iterable[Record], chaos: ChaosOptions, seed: int, stats: GenerateStats
) -> Iterator[Record | str]:
    rng = random.Random(f"{seed}/chaos")
    fractions = (chaos.out_of_order, chaos.duplicates, chaos.too_late, chaos.invalid)
    phases = [rng.random() for _ in fractions]
    done = [0, 0, 0, 0]
    pending: list[tuple[int, int, Record]] = []
    seq = 0
    latest: dict[str, int] = {}
    deleted: set[str] = set()
    n_late = n_bad = 0

    def note(rec: Record) -> None:
        kind = rec[5]
        if kind not in _SIGNAL_EXCLUDED and rec[0] > latest.get(rec[2], 0):
            latest[rec[2]] = rec[0]
        if kind == "user_deleted":
            deleted.add(rec[2])

    def owed(i: int, k: int) -> bool:
        f = fractions[i]
        return f > 0 and int(f * k + phases[i]) - int(phases[i]) > done[i]

    k = 0
    for rec in records:
        ts = rec[0]
        while pending and pending[0][0] <= ts:
            held = heapq.heappop(pending)[2]
            note(held)
            yield held
        k += 1
        stats.events += 1
        if owed(0, k) and rec[5] not in _NEVER_DELAYED:
            done[0] += 1
            stats.out_of_order += 1
            if rng.random() < 0.7:
                delay = rng.randint(60, 3 * _HOUR)
            else:
                delay = rng.randint(3 * _HOUR, 6 * _DAY)
            seq += 1
            heapq.heappush(pending, (ts + delay, seq, rec))
            continue
        note(rec)
        yield rec
        if owed(1, k):
            done[1] += 1
            stats.duplicates += 1
            seq += 1
            heapq.heappush(pending, (ts + rng.randint(60, 3 * _DAY), seq, rec))
        uid = rec[2]
        if owed(2, k) and rec[5] not in _SIGNAL_EXCLUDED and uid not in deleted:
            done[2] += 1
            stats.too_late += 1
            n_late += 1
            old = latest[uid] - 7 * _DAY - rng.randint(_HOUR, 3 * _DAY)
            eid = f"{uid}-late-{n_late}"
            if rng.random() < 0.5:
                yield (old, eid, uid, rec[3], "mood-app", "mood_logged", (rng.randint(1, 5),))
            else:
                due = old - rng.randint(0, 3 * _DAY)
                data = (f"late-t{n_late}", "work", due)
                yield (old, eid, uid, rec[3], "todoist", "task_completed", data)
        if owed(3, k):
            done[3] += 1
            stats.invalid += 1
            n_bad += 1
            yield _invalid_line(rng, rec, n_bad)
    while pending:
        held = heapq.heappop(pending)[2]
        note(held)
        yield held


_GARBAGE = (
    "not json at all",
    '{"eventId": "broken", "userId": ',
    "[1, 2, 3]",
    '{"eventId": "bad-x", "userId": 7}',
    "null",
    '{"eventId": "bad-y", "userId": "u1", "occurredAt": "yesterday", "moodLogged": {"score": 3}}',
)


def _invalid_line(rng: random.Random, rec: Record, n: int) -> str:
    """A line that either does not parse as an Event or breaks `validate`."""
    kind = rng.randrange(9)
    if kind == 0:
        return rng.choice(_GARBAGE)
    event: dict = {
        "eventId": f"bad-{n}",
        "userId": rec[2],
        "occurredAt": _fmt_ts(rec[0]),
        "source": "chaos",
        "moodLogged": {"score": 3},
    }
    if kind == 1:
        event["bogusField"] = 1
    elif kind == 2:
        event["userId"] = "not a valid user!"
    elif kind == 3:
        event["moodLogged"] = {"score": 9}
    elif kind == 4:
        del event["moodLogged"]
        event["profileUpdated"] = {"tz": "Mars/Olympus_Mons"}
    elif kind == 5:
        event["utcOffsetMinutes"] = 5000
    elif kind == 6:
        del event["moodLogged"]
    elif kind == 7:
        event["eventId"] = ""
    else:
        event["occurredAt"] = "1999-12-31T23:59:59Z"
    return json.dumps(event)
