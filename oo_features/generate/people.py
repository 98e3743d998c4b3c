"""The simulated people (`_User`): traits, a day of their life as `Record`s, and
`generate_records`, every user's base events merged in `occurred_at` order (no chaos)."""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import json
import random
from collections.abc import Iterator
from operator import itemgetter

from oo_features.generate.records import (
    _DAY,
    _EPOCH,
    _HOUR,
    _REACTIONS,
    AGENT_IDS,
    Record,
    default_start,
)
from oo_features.generate.zones import (
    _ZONE_CW,
    _ZONE_NAMES,
    _day_offsets,
    _exact,
    _hour_cw,
    _poisson,
)

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
