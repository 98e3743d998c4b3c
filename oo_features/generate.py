"""Realistic synthetic `oo.events.v1` events, deterministic per seed.

Used by `oo-features generate`, the tests, the benchmarks and the demo.

What the data looks like
------------------------
Each user (`u00000`, `u00001`, ...) gets their own `random.Random` (seeded from
``f"{seed}/{index}"``), so a user's events do not depend on how many other users
are generated. A user has:

- a home IANA time zone, announced by a `ProfileUpdated` just before their first
  local day (local midnight minus a minute); some users (about 15 %) travel for
  2-10 days to a zone at least 2 h away, and about a third of those also update
  their profile to the travel zone and back;
- an offset habit: most users' events carry `utc_offset_minutes` (the real
  offset of the zone they are in at that instant, DST included), some only
  mostly, and about 20 % never (so the profile zone applies);
- a chronotype: quiet nights (sleep window with almost no activity), one main
  and one secondary peak hour, a later and flatter weekend profile, and a
  weekend activity factor (0.15-0.9 of weekdays);
- 3-10 projects, each with its own deadline discipline (mean lateness from 1.5
  days early to 4 days late);
- tasks: `TaskCreated` with a due date (about 10 % without one), sometimes a
  `TaskUpdated` moving the due date, a `TaskCompleted` (with `due_at` and
  `project_id`) on the day the project's discipline puts it, sometimes a
  `TaskDeleted`, and some neglected (left open, so overdue);
- habits, calendar entries, moods (1-5), context changes, tips shown (1-3 agent
  ids) and most of them reacted to; occasionally a `PreferenceSet` on a real
  agent parameter (sometimes cleared later with an empty `value_json`), a
  `ConsentChanged` revoking `tasks` (often granted again a few days later), and
  rarely a `UserDeleted` (a third of those users come back later as new users).

Roughly 5-15 events per user per day (about 10 on average). Events come out
sorted by `occurred_at` (stable: ties keep generation order).

Time
----
Day `d` is the local date ``start.date() + d`` for every user (the UTC date of
`start`; its time of day is ignored). Without `start` the first date is
2026-01-01, moved earlier by ``days - 300`` days when ``days > 300`` so the
output always ends before 2026-10-29: deterministic, and never in the future
for the validator.

Chaos (off by default)
----------------------
`ChaosOptions` fractions are relative to the number of base events `N`; each
kind is injected ``floor(F * N + phase)`` times (spread evenly with a seeded
random phase), and `GenerateStats` reports the exact counts:

- ``out_of_order``: the event is held back and delivered later (70 %: 1 min to
  3 h, 30 %: 3 h to 6 days, always within the 7-day allowed lateness).
  `ProfileUpdated`, `ConsentChanged` and `UserDeleted` are never delayed.
- ``duplicates``: the identical event is delivered again 1 min to 3 days later.
- ``too_late``: a new signal event (`MoodLogged` or `TaskCompleted`, id
  ``{user}-late-{n}``) is delivered right after one of the user's signal events,
  with `occurred_at` 7 days and 1 h to 3 days before it, so an engine drops it.
  Users who were deleted in the stream are skipped.
- ``invalid``: a raw line that is not an Event (`DecodeError`) or an Event that
  breaks validation (bad user id, mood 9, unknown time zone, offset out of
  range, no payload, empty id, occurred before 2000). Only `generate_lines`
  emits these; `generate_events` skips them.

The base events are identical with and without chaos; chaos draws from its own
random stream.

JSON
----
`generate_lines` formats the canonical protobuf JSON itself (about 10x faster
than `json_format`); the result is byte-identical to `connectors.codec.to_json`
(tested).
"""

from __future__ import annotations

import bisect
import datetime as dt
import heapq
import itertools
import json
import math
import random
import zoneinfo
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache, lru_cache
from operator import itemgetter
from typing import TextIO

from features.registry import agent_ids
from proto import events_pb2 as pb

__all__ = [
    "AGENT_IDS",
    "DEFAULT_START",
    "ChaosOptions",
    "GenerateStats",
    "Record",
    "default_start",
    "format_event",
    "generate_events",
    "generate_lines",
    "generate_records",
    "record_to_event",
    "write_jsonl",
]

AGENT_IDS = agent_ids(include_shadow=False)
"""The registered agents (tips name them in `TipShown`)."""
DEFAULT_START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
_MAX_DEFAULT_DAYS = 300
_DAY = 86_400
_HOUR = 3_600
_EPOCH = dt.date(1970, 1, 1)

Record = tuple
"""A generated event before it becomes protobuf or JSON:
``(occurred_at_s, event_id, user_id, utc_offset_minutes | None, source, payload_kind, data)``
where `payload_kind` is the `Event.payload` oneof name and `data` a tuple of the
payload's fields in field-number order (timestamps as epoch seconds, `None` when unset)."""

# (zone, weight)
_ZONES: tuple[tuple[str, int], ...] = (
    ("Europe/Berlin", 12),
    ("America/New_York", 12),
    ("Europe/London", 8),
    ("America/Los_Angeles", 8),
    ("Europe/Paris", 5),
    ("America/Chicago", 5),
    ("Asia/Tokyo", 5),
    ("Asia/Kolkata", 5),
    ("America/Sao_Paulo", 4),
    ("Asia/Shanghai", 4),
    ("Asia/Singapore", 3),
    ("Australia/Sydney", 3),
    ("America/Denver", 2),
    ("America/Mexico_City", 2),
    ("Africa/Lagos", 2),
    ("UTC", 2),
    ("Pacific/Auckland", 1),
    ("Africa/Johannesburg", 1),
    ("Asia/Kathmandu", 1),
    ("America/St_Johns", 1),
    ("Asia/Dubai", 1),
)
_ZONE_NAMES = tuple(z for z, _ in _ZONES)
_ZONE_CW = tuple(itertools.accumulate(w for _, w in _ZONES))

_PROJECTS = (
    "work",
    "home",
    "health",
    "errands",
    "side-project",
    "finance",
    "learning",
    "family",
    "garden",
    "admin",
    "travel-plans",
    "reading",
)
_HABITS = ("water", "meditate", "run", "read", "stretch", "journal", "walk", "vitamins")
# due in k days after creation: k values and cumulative weights
_DUE_DAYS = (0, 1, 2, 3, 4, 5, 7, 10, 14)
_DUE_CW = tuple(itertools.accumulate((8, 18, 14, 12, 8, 8, 12, 8, 8)))
_DUE_HOURS = (9, 10, 12, 12, 14, 17, 17, 18, 18, 20, 23)
_SIGNAL_EXCLUDED = frozenset({"tip_shown", "tip_reaction"})
_NEVER_DELAYED = frozenset({"profile_updated", "consent_changed", "user_deleted"})
_REACTIONS = (1, 2, 3, 4)  # DONE, LIKE, DISMISS, SNOOZE
_REACTION_NAMES = {
    0: "REACTION_UNSPECIFIED",
    1: "REACTION_DONE",
    2: "REACTION_LIKE",
    3: "REACTION_DISMISS",
    4: "REACTION_SNOOZE",
}


def default_start(days: int) -> dt.datetime:
    """2026-01-01, moved earlier when `days` > 300 so the data ends before 2026-10-29."""
    return DEFAULT_START - dt.timedelta(days=max(0, days - _MAX_DEFAULT_DAYS))


# --------------------------------------------------------------------------- time zones


@cache
def _zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


@lru_cache(maxsize=65_536)
def _day_offsets(name: str, ordinal: int) -> tuple[int, int]:
    """The zone's UTC offset (minutes) at the start and at the end of a local date."""
    z = _zone(name)
    d = dt.date.fromordinal(ordinal)
    a = dt.datetime(d.year, d.month, d.day, tzinfo=z).utcoffset()
    b = dt.datetime(d.year, d.month, d.day, 23, 59, 59, tzinfo=z).utcoffset()
    assert a is not None and b is not None
    return int(a.total_seconds()) // 60, int(b.total_seconds()) // 60


def _exact(name: str, ordinal: int, sec: int) -> tuple[int, int]:
    """(epoch seconds, offset minutes) of local wall time `sec` after midnight of a date."""
    z = _zone(name)
    d = dt.date.fromordinal(ordinal)
    local = dt.datetime(d.year, d.month, d.day, tzinfo=z) + dt.timedelta(seconds=sec)
    ts = int(local.timestamp())
    off = dt.datetime.fromtimestamp(ts, z).utcoffset()
    assert off is not None
    return ts, int(off.total_seconds()) // 60


def _poisson(rng: random.Random, lam: float) -> int:
    limit = math.exp(-lam)
    k = 0
    p = rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _hour_cw(rng: random.Random, wake: int, sleep: int, peaks: list[tuple[float, float, float]]):
    """Cumulative weights over local hours 0-23: near zero while asleep, peaks while awake."""
    weights = []
    for h in range(24):
        awake = (h - wake) % 24 < (sleep - wake) % 24
        if not awake:
            weights.append(0.004)
            continue
        w = 0.12
        for center, sd, amp in peaks:
            dist = min(abs(h + 0.5 - center), 24 - abs(h + 0.5 - center))
            w += amp * math.exp(-0.5 * (dist / sd) ** 2)
        weights.append(w)
    return tuple(itertools.accumulate(weights))


# --------------------------------------------------------------------------- users


class _User:
    """One simulated person: fixed traits, open tasks and an agenda of scheduled actions."""

    def __init__(self, index: int, seed: int, days: int, start: dt.date) -> None:
        rng = self.rng = random.Random(f"{seed}/{index}")
        self.uid = f"u{index:05d}"
        self.n = 0  # event counter (ids)
        self.home = _ZONE_NAMES[bisect.bisect(_ZONE_CW, rng.random() * _ZONE_CW[-1])]
        r = rng.random()
        self.mode = 0 if r < 0.7 else (1 if r < 0.8 else 2)  # always / mostly / never an offset
        # chronotype
        kind = rng.random()
        if kind < 0.4:
            main = rng.uniform(8.0, 10.5)
        elif kind < 0.75:
            main = rng.uniform(10.5, 14.5)
        else:
            main = rng.uniform(16.5, 21.0)
        second = rng.choice((main - rng.uniform(3, 6), main + rng.uniform(3, 7))) % 24
        wake = rng.randint(6, 8) + (1 if main > 16 else 0)
        sleep = rng.randint(22, 25) + (1 if main > 16 else 0)
        self.wake = wake
        self.cw_weekday = _hour_cw(rng, wake, sleep, [(main, 1.3, 1.0), (second, 1.6, 0.45)])
        shift = rng.uniform(0.5, 2.0)
        self.cw_weekend = _hour_cw(
            rng, wake + 1, sleep + 1, [(main + shift, 2.2, 0.7), (second + shift, 2.0, 0.4)]
        )
        self.weekend = rng.uniform(0.15, 0.9)  # weekend activity relative to weekdays
        self.lam = rng.uniform(1.0, 3.6)  # tasks created (and so completed) per weekday
        # projects: (name, mean lateness days, sd)
        count = rng.randint(3, 10)
        names = rng.sample(_PROJECTS, count)
        self.projects = [(p, rng.uniform(-1.5, 4.0), rng.uniform(0.3, 1.8)) for p in names]
        self.proj_cw = tuple(itertools.accumulate(rng.paretovariate(1.2) for _ in names))
        self.habits = [
            (h, rng.uniform(0.3, 0.95), rng.choice((7, 8, 12, 18, 21, 22)))
            for h in rng.sample(_HABITS, rng.choice((0, 1, 1, 2, 2, 3)))
        ]
        self.cal_rate = rng.choice((0.0, 0.5, 1.0, 1.5, 2.5))
        self.mood_p = rng.uniform(0.1, 0.8)
        self.mood_mu = rng.uniform(2.3, 4.2)
        self.commuter = rng.random() < 0.5
        self.focus_p = rng.uniform(0.0, 0.5)
        self.tips_lam = rng.uniform(0.7, 2.0)
        self.react_p = rng.uniform(0.5, 0.95)
        self.react_cw = tuple(itertools.accumulate(rng.uniform(0.2, 1.0) for _ in _REACTIONS))
        # open tasks: task_id -> [project, due_ts | None, created_ts]
        self.tasks: dict[str, list] = {}
        self.agenda: dict[int, list[tuple]] = {}
        self.deleted = False
        self.rejoin_day = -1
        self.delete_day = -1
        self.trip: tuple[int, int, str, bool] | None = None
        # rare life events
        if days >= 5 and rng.random() < 0.15:
            home_off = _day_offsets(self.home, start.toordinal())[0]
            far = [
                z
                for z in _ZONE_NAMES
                if abs(_day_offsets(z, start.toordinal())[0] - home_off) >= 120
            ]
            t0 = rng.randint(1, days - 2)
            self.trip = (t0, t0 + rng.randint(2, 10), rng.choice(far), rng.random() < 0.35)
        if days >= 3 and rng.random() < 0.04:
            revoke = rng.randint(1, days - 1)
            self._plan(revoke, ("g", "tasks", False))
            if rng.random() < 0.6:
                self._plan(revoke + rng.randint(1, 6), ("g", "tasks", True))
        if days >= 2 and rng.random() < 0.1:
            for _ in range(rng.randint(1, 2)):
                day = rng.randint(0, days - 1)
                agent, param, value = self._preference()
                self._plan(day, ("p", agent, param, value))
                if rng.random() < 0.3:
                    self._plan(day + rng.randint(1, 7), ("p", agent, param, ""))
        if days >= 3 and rng.random() < 0.012:
            self.delete_day = rng.randint(1, days - 1)
            if rng.random() < 0.35:
                self.rejoin_day = self.delete_day + rng.randint(1, 5)
        self.initial_grant = rng.random() < 0.3

    def _plan(self, day: int, action: tuple) -> None:
        self.agenda.setdefault(day, []).append(action)

    def _preference(self) -> tuple[str, str, str]:
        rng = self.rng
        r = rng.randrange(7)
        if r == 0:
            return "time-of-day", "preferred_hour", str(rng.randint(6, 20))
        if r == 1:
            return "time-of-day", "quiet_start", str(rng.randint(20, 23))
        if r == 2:
            return "time-of-day", "quiet_end", str(rng.randint(5, 8))
        if r == 3:
            h = rng.randint(7, 18)
            return "time-of-day", "peak_hours", json.dumps([h, h + 1])
        if r == 4:
            return "overdue-task", "lateness_tolerance_days", str(rng.choice((0.5, 1.0, 2.0, 3.5)))
        if r == 5:
            return "recent-patterns", "lookback_days", str(rng.choice((7, 14, 28, 56, 112)))
        names = [p for p, _, _ in self.projects[:2]]
        return "focus-area", "preferred_areas", json.dumps(names)

    # -- one local day ------------------------------------------------------------------

    def _begin(self, zone: str, ordinal: int, day_epoch: int) -> None:
        self.zone = zone
        self.ordinal = ordinal
        self.day_epoch = day_epoch
        o0, o1 = _day_offsets(zone, ordinal)
        self.off = o0
        self.exact = o0 != o1

    def _emit(
        self, out: list, sec: int, source: str, kind: str, data: tuple, after: int = 0
    ) -> int:
        """Append one record at local wall time `sec` (after midnight); return its epoch seconds."""
        off: int | None
        if self.exact or sec < 0 or sec >= _DAY:
            ts, off = _exact(self.zone, self.ordinal, sec)
        else:
            off = self.off
            ts = self.day_epoch + sec - off * 60
        if ts <= after:
            ts = after + 300 + int(self.rng.random() * 5400)
        mode = self.mode
        if mode == 2 or (mode == 1 and self.rng.random() < 0.1):
            off = None
        self.n += 1
        out.append((ts, f"{self.uid}-{self.n}", self.uid, off, source, kind, data))
        return ts

    def _sec(self, cw: tuple) -> int:
        rng = self.rng
        h = bisect.bisect(cw, rng.random() * cw[-1])
        return h * _HOUR + int(rng.random() * _HOUR)

    def day(self, d: int, date: dt.date, day_epoch: int, out: list) -> None:
        rng = self.rng
        if self.deleted:
            if d != self.rejoin_day:
                return
            self.deleted = False
        trip = self.trip
        travelling = trip is not None and trip[0] <= d < trip[1]
        zone = trip[2] if travelling else self.home  # type: ignore[index]
        self._begin(zone, date.toordinal(), day_epoch)
        emit = self._emit
        if d == 0 or d == self.rejoin_day:
            cw_first = self.cw_weekend if date.weekday() >= 5 else self.cw_weekday
            emit(out, -60, "profile", "profile_updated", (self.home,))
            if self.initial_grant:
                emit(out, -59, "privacy", "consent_changed", ("tasks", True))
            # the backlog imported at sign-up, some of it already overdue
            for _ in range(round(self.lam * 3)):
                self._new_task(d, date, cw_first, out, backlog=True)
        if trip is not None and d in (trip[0], trip[1]):
            if trip[3]:
                emit(out, -30, "profile", "profile_updated", (zone,))
            emit(out, self.wake * _HOUR, "phone", "context_changed", ("travel", d == trip[0]))
        weekend = date.weekday() >= 5
        cw = self.cw_weekend if weekend else self.cw_weekday
        if d == self.delete_day:
            sec = max(self._sec(cw), 6 * _HOUR)
            emit(out, sec, "privacy", "user_deleted", ())
            self.deleted = True
            self.tasks.clear()
            self.agenda.clear()
            return
        factor = self.weekend if weekend else 1.0
        tasks = self.tasks
        # scheduled actions
        for action in self.agenda.pop(d, ()):
            a = action[0]
            if a == "c" or a == "x" or a == "u":
                task = tasks.get(action[1])
                if task is None:
                    continue
                tid = action[1]
                if a == "c":
                    emit(
                        out,
                        self._sec(cw),
                        "todoist",
                        "task_completed",
                        (tid, task[0], task[1]),
                        task[2],
                    )
                    del tasks[tid]
                elif a == "x":
                    emit(out, self._sec(cw), "todoist", "task_deleted", (tid,), task[2])
                    del tasks[tid]
                else:
                    task[1] += action[2] * _DAY
                    task[2] = emit(
                        out,
                        self._sec(cw),
                        "todoist",
                        "task_updated",
                        (tid, task[0], task[1]),
                        task[2],
                    )
            elif a == "g":
                emit(out, self._sec(cw), "privacy", "consent_changed", (action[1], action[2]))
            else:
                emit(out, self._sec(cw), "settings", "preference_set", action[1:])
        # new tasks
        for _ in range(_poisson(rng, self.lam * factor)):
            self._new_task(d, date, cw, out)
        # habits
        for habit, p, hour in self.habits:
            if rng.random() < p * (0.8 if weekend else 1.0):
                sec = hour * _HOUR + int(rng.gauss(0, 2400))
                emit(out, min(max(sec, 0), _DAY - 1), "habits", "habit_checked", (habit,))
        # calendar
        for _ in range(_poisson(rng, self.cal_rate * (0.3 if weekend else 1.0))):
            sec = self._sec(cw)
            begins = (
                day_epoch + rng.randint(0, 5) * _DAY + rng.randint(16, 36) * 1800 - self.off * 60
            )
            cal = f"c{self.n + 1}"
            ends = begins + rng.choice((30, 45, 60, 90)) * 60
            emit(out, sec, "calendar", "calendar_event_observed", (cal, begins, ends))
        # mood
        if rng.random() < self.mood_p:
            score = round(rng.gauss(self.mood_mu + (0.3 if weekend else 0.0), 0.8))
            emit(out, self._sec(cw), "mood-app", "mood_logged", (min(5, max(1, score)),))
        # contexts
        if self.commuter and not weekend and not travelling and rng.random() < 0.85:
            for base in (self.wake * _HOUR + 1800, 17 * _HOUR):
                sec = base + rng.randint(0, 3600)
                emit(out, sec, "phone", "context_changed", ("commuting", True))
                emit(out, sec + rng.randint(1200, 3600), "phone", "context_changed", ("commuting",))
        if rng.random() < self.focus_p:
            sec = self._sec(cw)
            emit(out, sec, "phone", "context_changed", ("focus", True))
            emit(out, sec + rng.randint(1800, 7200), "phone", "context_changed", ("focus",))
        # tips and reactions
        for _ in range(min(3, _poisson(rng, self.tips_lam * (0.7 if weekend else 1.0)))):
            sec = self._sec(cw)
            tip = f"{self.uid}-tip{self.n + 1}"
            agents = tuple(rng.sample(AGENT_IDS, rng.choice((1, 1, 2, 2, 3))))
            shown = emit(out, sec, "tip-api", "tip_shown", (tip, agents))
            if rng.random() < self.react_p:
                r = _REACTIONS[bisect.bisect(self.react_cw, rng.random() * self.react_cw[-1])]
                emit(
                    out,
                    sec + rng.randint(30, 3 * _HOUR),
                    "tip-api",
                    "tip_reaction",
                    (tip, r),
                    shown,
                )

    def _new_task(
        self, d: int, date: dt.date, cw: tuple, out: list, *, backlog: bool = False
    ) -> None:
        rng = self.rng
        sec = -50 if backlog else self._sec(cw)
        tid = f"t{self.n + 1}"
        proj, mu, sd = self.projects[bisect.bisect(self.proj_cw, rng.random() * self.proj_cw[-1])]
        if rng.random() < 0.1:
            due = None
            target = d + rng.randint(0, 6)
            k = 0
        else:
            if backlog:
                k = rng.randint(-5, 10)
            else:
                k = _DUE_DAYS[bisect.bisect(_DUE_CW, rng.random() * _DUE_CW[-1])]
            due_sec = rng.choice(_DUE_HOURS) * _HOUR
            if k == 0 and due_sec <= sec:
                due_sec = _DAY - 1
            due = self.day_epoch + k * _DAY + due_sec - self.off * 60
            target = d + k + round(rng.gauss(mu, sd))
            if target < d:
                target = d + (rng.randint(0, 4) if backlog else 0)
        created = self._emit(out, sec, "todoist", "task_created", (tid, proj, due))
        self.tasks[tid] = [proj, due, created]
        fate = rng.random()
        if fate < 0.06:  # neglected: stays open (and, with a due date, overdue)
            return
        if fate < 0.11:
            self._plan(d + rng.randint(1, 10), ("x", tid))
            return
        if due is not None and rng.random() < 0.1:
            moved = rng.randint(1, 7)
            self._plan(rng.randint(d, max(d, min(target, d + k) - 1)), ("u", tid, moved))
            target += moved
        weekday = (date.weekday() + target - d) % 7
        if weekday >= 5 and rng.random() > self.weekend:
            target += 7 - weekday + (rng.random() < 0.4)  # Monday or Tuesday
        self._plan(target, ("c", tid))


def _start_date(start: dt.datetime | dt.date | None, days: int) -> dt.date:
    if start is None:
        return default_start(days).date()
    if isinstance(start, dt.datetime):
        if start.tzinfo is not None:
            start = start.astimezone(dt.UTC)
        return start.date()
    return start


def generate_records(
    users: int, days: int, seed: int, start: dt.datetime | dt.date | None = None
) -> Iterator[Record]:
    """The base events as `Record` tuples, sorted by `occurred_at` (stable), no chaos."""
    first = _start_date(start, days)
    people = [_User(i, seed, days, first) for i in range(users)]
    buf: list[Record] = []
    key = itemgetter(0)
    for d in range(days):
        date = first + dt.timedelta(days=d)
        day_epoch = (date - _EPOCH).days * _DAY
        for person in people:
            person.day(d, date, day_epoch, buf)
        buf.sort(key=key)
        # every later local day starts after (next UTC midnight - 14 h) minus a minute
        cut = bisect.bisect_left(buf, day_epoch + _DAY - 15 * _HOUR, key=key)
        yield from buf[:cut]
        del buf[:cut]
    yield from buf


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


# --------------------------------------------------------------------------- output


_DAY_PREFIX: dict[int, str] = {}


def _fmt_ts(ts: int) -> str:
    day, rest = divmod(ts, _DAY)
    prefix = _DAY_PREFIX.get(day)
    if prefix is None:
        prefix = _DAY_PREFIX[day] = (_EPOCH + dt.timedelta(days=day)).strftime("%Y-%m-%dT")
    h, rest = divmod(rest, _HOUR)
    m, s = divmod(rest, 60)
    return f"{prefix}{h:02d}:{m:02d}:{s:02d}Z"


def _task_body(name: str):
    def body(data: tuple) -> str:
        tid, proj, due = data
        parts = [f'"taskId": "{tid}"']
        if proj:
            parts.append(f'"projectId": "{proj}"')
        if due is not None:
            parts.append(f'"dueAt": "{_fmt_ts(due)}"')
        return f'"{name}": {{{", ".join(parts)}}}'

    return body


def _calendar_body(data: tuple) -> str:
    cal, begins, ends = data
    return (
        f'"calendarEventObserved": {{"calendarEventId": "{cal}", '
        f'"startsAt": "{_fmt_ts(begins)}", "endsAt": "{_fmt_ts(ends)}"}}'
    )


def _context_body(data: tuple) -> str:
    if len(data) > 1 and data[1]:
        return f'"contextChanged": {{"context": "{data[0]}", "active": true}}'
    return f'"contextChanged": {{"context": "{data[0]}"}}'


def _consent_body(data: tuple) -> str:
    if data[1]:
        return f'"consentChanged": {{"consent": "{data[0]}", "granted": true}}'
    return f'"consentChanged": {{"consent": "{data[0]}"}}'


def _preference_body(data: tuple) -> str:
    agent, param, value = data
    if value:
        return (
            f'"preferenceSet": {{"agentId": "{agent}", "param": "{param}", '
            f'"valueJson": {json.dumps(value)}}}'
        )
    return f'"preferenceSet": {{"agentId": "{agent}", "param": "{param}"}}'


def _tip_shown_body(data: tuple) -> str:
    agents = ", ".join(f'"{a}"' for a in data[1])
    return f'"tipShown": {{"tipId": "{data[0]}", "agentIds": [{agents}]}}'


def _tip_reaction_body(data: tuple) -> str:
    if data[1]:
        return f'"tipReaction": {{"tipId": "{data[0]}", "reaction": "{_REACTION_NAMES[data[1]]}"}}'
    return f'"tipReaction": {{"tipId": "{data[0]}"}}'


_BODIES = {
    "task_created": _task_body("taskCreated"),
    "task_updated": _task_body("taskUpdated"),
    "task_completed": _task_body("taskCompleted"),
    "task_deleted": lambda data: f'"taskDeleted": {{"taskId": "{data[0]}"}}',
    "habit_checked": lambda data: f'"habitChecked": {{"habitId": "{data[0]}"}}',
    "calendar_event_observed": _calendar_body,
    "mood_logged": lambda data: f'"moodLogged": {{"score": {data[0]}}}',
    "context_changed": _context_body,
    "profile_updated": lambda data: f'"profileUpdated": {{"tz": "{data[0]}"}}',
    "preference_set": _preference_body,
    "consent_changed": _consent_body,
    "user_deleted": lambda data: '"userDeleted": {}',
    "tip_shown": _tip_shown_body,
    "tip_reaction": _tip_reaction_body,
}


def format_event(rec: Record) -> str:
    """One line of canonical protobuf JSON, byte-identical to `connectors.codec.to_json`.

    Only for records made here: their ids, names and zones need no JSON escaping.
    """
    ts, eid, uid, off, source, kind, data = rec
    if off is None:
        head = f'{{"eventId": "{eid}", "userId": "{uid}", "occurredAt": "{_fmt_ts(ts)}", '
    else:
        head = (
            f'{{"eventId": "{eid}", "userId": "{uid}", "occurredAt": "{_fmt_ts(ts)}", '
            f'"utcOffsetMinutes": {off}, '
        )
    return f'{head}"source": "{source}", {_BODIES[kind](data)}}}'


def record_to_event(rec: Record) -> pb.Event:
    """The `oo.events.v1.Event` for a record."""
    ts, eid, uid, off, source, kind, data = rec
    event = pb.Event(event_id=eid, user_id=uid, source=source)
    event.occurred_at.seconds = ts
    if off is not None:
        event.utc_offset_minutes = off
    payload = getattr(event, kind)
    if kind in ("task_created", "task_updated", "task_completed"):
        payload.task_id = data[0]
        payload.project_id = data[1]
        if data[2] is not None:
            payload.due_at.seconds = data[2]
    elif kind == "task_deleted":
        payload.task_id = data[0]
    elif kind == "habit_checked":
        payload.habit_id = data[0]
    elif kind == "calendar_event_observed":
        payload.calendar_event_id = data[0]
        payload.starts_at.seconds = data[1]
        payload.ends_at.seconds = data[2]
    elif kind == "mood_logged":
        payload.score = data[0]
    elif kind == "context_changed":
        payload.context = data[0]
        payload.active = len(data) > 1 and bool(data[1])
    elif kind == "profile_updated":
        payload.tz = data[0]
    elif kind == "preference_set":
        payload.agent_id, payload.param, payload.value_json = data
    elif kind == "consent_changed":
        payload.consent = data[0]
        payload.granted = bool(data[1])
    elif kind == "user_deleted":
        payload.SetInParent()
    elif kind == "tip_shown":
        payload.tip_id = data[0]
        payload.agent_ids.extend(data[1])
    elif kind == "tip_reaction":
        payload.tip_id = data[0]
        payload.reaction = data[1]
    else:  # pragma: no cover - every kind above
        raise ValueError(f"unknown payload kind {kind!r}")
    return event


def _stream(
    users: int,
    days: int,
    seed: int,
    start: dt.datetime | dt.date | None,
    chaos: ChaosOptions | None,
    stats: GenerateStats,
) -> Iterator[Record | str]:
    records = generate_records(users, days, seed, start)
    if chaos is not None and chaos.active:
        yield from _chaos(records, chaos, seed, stats)
        return
    for rec in records:
        stats.events += 1
        yield rec


def generate_events(
    users: int,
    days: int,
    seed: int,
    start: dt.datetime | dt.date | None = None,
    *,
    chaos: ChaosOptions | None = None,
    stats: GenerateStats | None = None,
) -> Iterator[pb.Event]:
    """Synthetic events in delivery order; with `chaos`, everything but the invalid lines."""
    stats = GenerateStats() if stats is None else stats
    for item in _stream(users, days, seed, start, chaos, stats):
        if isinstance(item, str):
            continue
        stats.lines += 1
        yield record_to_event(item)


def generate_lines(
    users: int,
    days: int,
    seed: int,
    start: dt.datetime | dt.date | None = None,
    *,
    chaos: ChaosOptions | None = None,
    stats: GenerateStats | None = None,
) -> Iterator[str]:
    """Synthetic events as canonical-JSON lines (no newline), invalid lines mixed in by `chaos`."""
    stats = GenerateStats() if stats is None else stats
    fmt = format_event
    for item in _stream(users, days, seed, start, chaos, stats):
        stats.lines += 1
        yield item if isinstance(item, str) else fmt(item)


def write_jsonl(
    out: TextIO,
    users: int,
    days: int,
    seed: int,
    start: dt.datetime | dt.date | None = None,
    *,
    chaos: ChaosOptions | None = None,
) -> GenerateStats:
    """Write `generate_lines` to `out`, one per line; return the counts."""
    stats = GenerateStats()
    chunk: list[str] = []
    for line in generate_lines(users, days, seed, start, chaos=chaos, stats=stats):
        chunk.append(line)
        if len(chunk) >= 8192:
            chunk.append("")
            out.write("\n".join(chunk))
            chunk.clear()
    if chunk:
        chunk.append("")
        out.write("\n".join(chunk))
    return stats
