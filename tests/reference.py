"""The independent reference of `docs/features.md`: plain Python admission, numpy/pandas features.

Written from the text of `docs/features.md` and the interpretations in
`features/README.md`, never from the engine's code, so the property tests in
`tests/unit/test_features_property.py` compare two readings of the contract.

Two stages, kept apart on purpose:

1. **Admission** walks a user's events in arrival (list) order and decides,
   per event, whether it is dropped (deleted, late, duplicate) or admitted.
   Everything that depends on arrival order is settled here: the local time
   of an event (with the profile zone in effect when it is admitted), the
   watermark and the as-of event, consents (and so which events each agent
   folds), preferences, and the feedback counters.
2. **Features** are then computed from the admitted events alone, in bulk,
   directly from the definitions: `np.bincount`, `np.percentile`,
   `np.median`, `np.std(ddof=1)`, `pandas.Series.ewm`.

Readings where the contract and the README are silent (the engine must match
them; each has a hand-computed test in `tests/unit/test_reference.py`):

- Checks run in the order deletion, lateness, duplicates. Admitted ids are
  forgotten when the watermark advances past their `occurred_at` + 7 days, so
  for a re-sent event (same id, same `occurred_at`) this equals the README's
  order: a re-send of an event that has since fallen behind the allowed
  lateness counts as `late_dropped`, not `duplicates`.
- Privacy events are never dropped as late: `ConsentChanged` skips the
  lateness check (a late revocation still stands if it is the latest by event
  time; a re-send of it while its id is remembered is a duplicate), and a
  `UserDeleted` newer than the tombstone is always honoured (no lateness or
  duplicate check). A deletion wipes everything but the counters, which are
  cumulative for the `UserState`. Either, at or before the tombstone, is
  dropped as `deleted_dropped` like any other event.
- The time zone used to place a `ProfileUpdated` without an offset is the one
  in effect *before* it is folded in. Profile ties on `occurred_at`: the later
  arrival stands.
- Windows ("the last N days") hold local dates `D-N+1 .. D` only; a done event
  whose local date is after `D` (possible with differing offsets) is in none.
- `first_done_date` is the local date of the done event with the smallest
  `occurred_at` (ties: first admitted), not the smallest local date.
- `project_realness` uses the inferred global median, even when the user pinned
  `lateness_tolerance_days`; overdue tasks use the effective tolerance.
- Overdue: `due_at + tolerance_days * 86_400_000 < watermark` (ms), strict.
- Preferences and feedback are user-level: a consent revocation does not
  clear them. An agent folds only events admitted while it is enabled, and
  starts empty when re-enabled (task states included).
- `hist` (time-of-day) and `today`, `overdue_count`, `overdue_task_ids` are
  computed also while the agent is in cold start.
- Tips are remembered while `tip_shown.occurred_at >= watermark - 7 days`
  (watermark at the reaction's admission); a reaction admitted before its
  tip is not matched; a `TipShown` naming an agent twice counts once; a
  re-shown tip id replaces the earlier one.
- A user with no admitted signal event (only feedback) has no as-of time and
  so no agent outputs at all (feedback is still counted).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from features.registry import agent_ids
from proto import events_pb2 as pb

DAY_MS = 86_400_000
ALLOWED_LATENESS_MS = 7 * DAY_MS
FEEDBACK_KINDS = frozenset({"tip_shown", "tip_reaction"})
TASK_KINDS = frozenset({"task_created", "task_updated", "task_completed", "task_deleted"})
POSITIVE = frozenset({pb.REACTION_DONE, pb.REACTION_LIKE})
NEGATIVE = frozenset({pb.REACTION_DISMISS, pb.REACTION_SNOOZE})
LOOKBACKS = (7, 14, 28, 56, 112)

# The agents of docs/features.md: cold-start defaults in parameter order, and
# what the inference rules need. `tz` of time-of-day is filled per user. Which agents exist
# is the registry's (`AGENTS`, below); `reference_for` fails naming an agent that has none here.
COLD_START: dict[str, dict[str, Any]] = {
    "time-of-day": {
        "preferred_hour": 9,
        "quiet_start": 22,
        "quiet_end": 7,
        "peak_hours": [9, 10, 11],
        "tz": "UTC",
    },
    "momentum": {
        "baseline_completions_per_day": 0.0,
        "stdev": 0.0,
        "z": 0.0,
        "engagement_trend": "steady",
    },
    "overdue-task": {"lateness_tolerance_days": 1.0, "project_realness": {}},
    "recent-patterns": {"lookback_days": 28, "weekly_cycle": 0.0, "daily_cycle": 0.0},
    "focus-area": {"preferred_areas": []},
    "context": {"active_contexts": [], "active_since": {}, "done_in_context": {}},
}
MIN_HISTORY: dict[str, int] = dict.fromkeys(COLD_START, 0)
REQUIRED_CONSENTS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(COLD_START, ("tasks",)),
    "context": ("tasks", "context"),
}
MAX_CONTEXTS = 32
AGENTS: tuple[str, ...] = agent_ids(include_shadow=False)
"""The registered agents (the registry's list; every definition below is the reference's own)."""


def ts_ms(ts: Any) -> int:
    """Epoch milliseconds of a protobuf Timestamp."""
    return int(ts.seconds) * 1000 + int(ts.nanos) // 1_000_000


@dataclass(frozen=True, slots=True)
class Admitted:
    """One admitted event with what admission settled about it."""

    seq: int
    """Admission order within the user's current life (0, 1, ...)."""
    event: pb.Event
    kind: str
    t_ms: int
    local: datetime
    """Naive local wall time, resolved once on admission."""

    @property
    def day(self) -> int:
        return self.local.date().toordinal()


@dataclass
class RefUser:
    """What the reference says about one user."""

    user_id: str
    deleted: bool
    counters: dict[str, int]
    feedback: dict[str, Any]
    params: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    """agent_id -> param name -> `Param.as_dict()`; enabled agents of a user with a watermark."""
    extras: dict[str, dict[str, Any]] = field(default_factory=dict)
    watermark_ms: int | None = None
    as_of_date: date | None = None


def local_time(event: pb.Event, profile_tz: str | None) -> datetime:
    """The event's local wall time: its own offset, else the profile zone, else UTC."""
    utc = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(
        seconds=event.occurred_at.seconds, microseconds=event.occurred_at.nanos // 1000
    )
    if event.HasField("utc_offset_minutes"):
        return (utc + timedelta(minutes=event.utc_offset_minutes)).replace(tzinfo=None)
    if profile_tz:
        return utc.astimezone(ZoneInfo(profile_tz)).replace(tzinfo=None)
    return utc.replace(tzinfo=None)


class _Life:
    """Everything a deletion wipes: one life of the user between tombstones."""

    def __init__(self) -> None:
        self.seq = 0
        self.watermark: int | None = None
        self.as_of: Admitted | None = None
        self.seen: dict[str, int] = {}  # event_id -> occurred_at, pruned as the watermark moves
        self.profile: tuple[int, int, str] | None = None  # (t_ms, seq, tz)
        self.consents: dict[str, tuple[int, int, bool]] = {}
        self.prefs: dict[tuple[str, str], tuple[int, int, str]] = {}
        self.agent_events: dict[str, list[Admitted]] = {a: [] for a in AGENTS}
        self.enabled: dict[str, bool] = dict.fromkeys(AGENTS, True)
        self.feedback_events = 0
        self.rated: list[float] = []
        self.tips: dict[str, tuple[int, tuple[str, ...]]] = {}
        self.shown: Counter[str] = Counter()
        self.positive: Counter[str] = Counter()
        self.admitted_any = False

    def granted(self, consent: str) -> bool:
        return self.consents.get(consent, (0, 0, True))[2]

    def admit(self, event: pb.Event, kind: str, t: int) -> None:
        profile_tz = self.profile[2] if self.profile else None
        adm = Admitted(self.seq, event, kind, t, local_time(event, profile_tz))
        self.seq += 1
        self.seen[event.event_id] = t
        self.admitted_any = True
        if kind in FEEDBACK_KINDS:
            self._feedback(adm)
            return
        if self.watermark is None or t > self.watermark:
            self.watermark = t
            self.as_of = adm
            horizon = t - ALLOWED_LATENESS_MS
            self.seen = {i: s for i, s in self.seen.items() if s >= horizon}
        key = (t, adm.seq)
        if kind == "profile_updated" and (self.profile is None or key >= self.profile[:2]):
            self.profile = (t, adm.seq, event.profile_updated.tz)
        elif kind == "consent_changed":
            c = event.consent_changed
            if c.consent not in self.consents or key >= self.consents[c.consent][:2]:
                self.consents[c.consent] = (t, adm.seq, c.granted)
            for agent, required in REQUIRED_CONSENTS.items():
                now = all(self.granted(r) for r in required)
                if now != self.enabled[agent]:
                    self.agent_events[agent] = []  # lost on revoke, empty on re-grant
                    self.enabled[agent] = now
        elif kind == "preference_set":
            p = event.preference_set
            if p.agent_id in AGENTS and p.param in COLD_START[p.agent_id]:
                pk = (p.agent_id, p.param)
                if pk not in self.prefs or key >= self.prefs[pk][:2]:
                    self.prefs[pk] = (t, adm.seq, p.value_json)
        for agent, enabled in self.enabled.items():
            if enabled:
                self.agent_events[agent].append(adm)

    def _feedback(self, adm: Admitted) -> None:
        self.feedback_events += 1
        ev = adm.event
        if adm.kind == "tip_shown":
            agents = tuple(dict.fromkeys(ev.tip_shown.agent_ids))
            self.tips[ev.tip_shown.tip_id] = (adm.t_ms, agents)
            self.shown.update(agents)
            return
        reaction = ev.tip_reaction.reaction
        if reaction in POSITIVE:
            self.rated.append(1.0)
            tip = self.tips.get(ev.tip_reaction.tip_id)
            if tip is not None and (
                self.watermark is None or tip[0] >= self.watermark - ALLOWED_LATENESS_MS
            ):
                self.positive.update(tip[1])
        elif reaction in NEGATIVE:
            self.rated.append(0.0)


def reference_features(events: list[pb.Event]) -> dict[str, RefUser]:
    """Every user's features from an event log, in the log's (arrival) order."""
    by_user: dict[str, list[pb.Event]] = defaultdict(list)
    for ev in events:
        by_user[ev.user_id].append(ev)
    return {uid: reference_user(uid, evs) for uid, evs in by_user.items()}


def reference_user(user_id: str, events: list[pb.Event]) -> RefUser:
    counters = {"late_dropped": 0, "duplicates": 0, "deleted_dropped": 0}
    tombstone: int | None = None
    life = _Life()
    for ev in events:
        kind = ev.WhichOneof("payload")
        t = ts_ms(ev.occurred_at)
        if tombstone is not None and t <= tombstone:
            counters["deleted_dropped"] += 1
        elif kind == "user_deleted":
            tombstone = t
            life = _Life()
        elif (
            kind != "consent_changed"
            and life.watermark is not None
            and t < life.watermark - ALLOWED_LATENESS_MS
        ):
            counters["late_dropped"] += 1
        elif ev.event_id in life.seen:
            counters["duplicates"] += 1
        else:
            life.admit(ev, kind, t)
    deleted = tombstone is not None and not life.admitted_any
    out = RefUser(user_id, deleted, counters, feedback_of(life))
    if deleted:
        return out
    out.watermark_ms = life.watermark
    out.as_of_date = life.as_of.local.date() if life.as_of else None
    for agent, enabled in life.enabled.items():
        if enabled and life.watermark is not None:
            out.params[agent], out.extras[agent] = agent_features(agent, life)
    return out


def feedback_of(life: _Life) -> dict[str, Any]:
    rate = None
    if life.rated:
        rate = float(pd.Series(life.rated).ewm(alpha=0.1, adjust=False).mean().iloc[-1])
    per_agent = {
        a: {"shown": life.shown[a], "positive": life.positive[a]}
        for a in sorted(set(life.shown) | set(life.positive))
    }
    return {
        "feedback_events": life.feedback_events,
        "acceptance_rate": rate,
        "per_agent": per_agent,
    }


# --------------------------------------------------------------------------- features


def agent_features(agent: str, life: _Life) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """(params as `Param.as_dict()`, extras) of one enabled agent."""
    evs = life.agent_events[agent]
    d = life.as_of.day if life.as_of else None
    done = [a for a in evs if a.kind == "task_completed"]
    cold = dict(COLD_START[agent])
    if agent == "time-of-day":
        cold["tz"] = life.profile[2] if life.profile else "UTC"
    history_ok = life.feedback_events >= MIN_HISTORY[agent]
    inferred, extras = COMPUTE[agent](evs, done, d, cold)
    base: dict[str, tuple[Any, str]]
    if inferred is None or not history_ok:
        base = {name: (value, "cold_start") for name, value in cold.items()}
    else:
        base = inferred
    if agent == "overdue-task":
        extras = _overdue_tasks(evs, life, base, life.prefs)
    params: dict[str, dict[str, Any]] = {}
    for name, (value, source) in base.items():
        pref = life.prefs.get((agent, name))
        if pref is not None and pref[2] != "":
            params[name] = {"value": json.loads(pref[2]), "source": "user", "inferred_value": value}
        else:
            params[name] = {"value": value, "source": source}
    return params, extras


def _window(done: list[Admitted], d: int | None, days: int) -> list[Admitted]:
    if d is None:
        return []
    return [a for a in done if d - days + 1 <= a.day <= d]


Inferred = dict[str, tuple[Any, str]] | None


def _time_of_day(
    done: list[Admitted], d: int | None, cold: dict[str, Any]
) -> tuple[Inferred, dict[str, Any]]:
    win = _window(done, d, 28)
    hist = np.bincount([a.local.hour for a in win], minlength=24).astype(int)
    extras = {"hist": [int(x) for x in hist]}
    if len(win) < 10:
        return None, extras
    preferred = int(np.argmax(hist))  # first maximum: lowest hour on ties
    below = hist < hist.sum() / 24
    best: tuple[int, int] | None = None  # (length, first hour)
    for h in range(24):
        if below[h] and not below[(h - 1) % 24]:
            n = 0
            while n < 24 and below[(h + n) % 24]:
                n += 1
            if best is None or n > best[0] or (n == best[0] and h < best[1]):
                best = (n, h)
    q75 = np.percentile(hist, 75)
    peaks = [int(h) for h in np.flatnonzero((hist > 0) & (hist >= q75))]
    inferred: dict[str, tuple[Any, str]] = {
        "preferred_hour": (preferred, "inferred"),
        "quiet_start": (cold["quiet_start"], "cold_start"),
        "quiet_end": (cold["quiet_end"], "cold_start"),
        "peak_hours": (peaks, "inferred"),
        "tz": (cold["tz"], "cold_start"),
    }
    if best is not None:
        length, first = best
        inferred["quiet_start"] = (first, "inferred")
        inferred["quiet_end"] = ((first + length - 1 + 1) % 24, "inferred")
    return inferred, extras


def _momentum(
    done: list[Admitted], d: int | None, cold: dict[str, Any]
) -> tuple[Inferred, dict[str, Any]]:
    if d is None or not done:
        return None, {"today": 0}
    c = Counter(a.day for a in done)
    today = c[d]
    first = min(done, key=lambda a: (a.t_ms, a.seq)).day
    start = max(d - 28, first)
    days = np.arange(start, d)
    if len(days) < 7:
        return None, {"today": today}
    counts = np.array([c[int(x)] for x in days], dtype=float)
    baseline = float(np.mean(counts))
    stdev = float(np.std(counts, ddof=1))
    z = 0.0 if stdev == 0 else (today - baseline) / stdev
    trend = "rising" if z >= 1 else "falling" if z <= -1 else "steady"
    return {
        "baseline_completions_per_day": (baseline, "inferred"),
        "stdev": (stdev, "inferred"),
        "z": (float(z), "inferred"),
        "engagement_trend": (trend, "inferred"),
    }, {"today": today}


def _latenesses(done: list[Admitted]) -> list[tuple[int, int, float, str]]:
    """(t_ms, seq, lateness_days, project_id) of done events with a due date, oldest first."""
    out = [
        (
            a.t_ms,
            a.seq,
            (a.t_ms - ts_ms(a.event.task_completed.due_at)) / DAY_MS,
            a.event.task_completed.project_id,
        )
        for a in done
        if a.event.task_completed.HasField("due_at")
    ]
    return sorted(out)


def _overdue_lateness(
    done: list[Admitted], d: int | None, cold: dict[str, Any]
) -> tuple[Inferred, dict[str, Any]]:
    values = _latenesses(done)
    recent = [v[2] for v in values[-100:]]
    if len(recent) < 5:
        return None, {}
    median_global = float(np.median(recent))
    per_project: dict[str, list[float]] = defaultdict(list)
    for _, _, lateness, project in values:
        if project:
            per_project[project].append(lateness)
    realness = {}
    for project, lat in sorted(per_project.items()):
        last = lat[-50:]
        if len(last) >= 3:
            realness[project] = 1.0 / (1.0 + max(0.0, float(np.median(last)) - median_global))
    return {
        "lateness_tolerance_days": (median_global, "inferred"),
        "project_realness": (realness, "inferred"),
    }, {}


def _overdue_tasks(
    evs: list[Admitted],
    life: _Life,
    base: dict[str, tuple[Any, str]],
    prefs: dict[tuple[str, str], tuple[int, int, str]],
) -> dict[str, Any]:
    pref = prefs.get(("overdue-task", "lateness_tolerance_days"))
    if pref is not None and pref[2] != "":
        tolerance = float(json.loads(pref[2]))
    else:
        tolerance = float(base["lateness_tolerance_days"][0])
    latest: dict[str, Admitted] = {}
    for a in evs:
        if a.kind in TASK_KINDS:
            task_id = getattr(a.event, a.kind).task_id
            if task_id not in latest or (a.t_ms, a.seq) >= (
                latest[task_id].t_ms,
                latest[task_id].seq,
            ):
                latest[task_id] = a
    overdue: list[tuple[int, str]] = []
    for task_id, a in latest.items():
        if a.kind in ("task_created", "task_updated"):
            payload = getattr(a.event, a.kind)
            if payload.HasField("due_at") and life.watermark is not None:
                due = ts_ms(payload.due_at)
                if due + tolerance * DAY_MS < life.watermark:
                    overdue.append((due, task_id))
    overdue.sort()
    return {"overdue_count": len(overdue), "overdue_task_ids": [t for _, t in overdue[:3]]}


def _recent_patterns(
    done: list[Admitted], d: int | None, cold: dict[str, Any]
) -> tuple[Inferred, dict[str, Any]]:
    if len(_window(done, d, 112)) < 10:
        return None, {}
    lookback = next((n for n in LOOKBACKS if len(_window(done, d, n)) >= 30), 112)
    win = _window(done, d, lookback)

    def strength(bins: np.ndarray) -> float:
        top = bins.max()
        return 0.0 if top == 0 else float(1 - bins.mean() / top)

    weekly = strength(np.bincount([a.local.weekday() for a in win], minlength=7))
    daily = strength(np.bincount([a.local.hour for a in win], minlength=24))
    return {
        "lookback_days": (lookback, "inferred"),
        "weekly_cycle": (weekly, "inferred"),
        "daily_cycle": (daily, "inferred"),
    }, {}


def _focus_area(
    done: list[Admitted], d: int | None, cold: dict[str, Any]
) -> tuple[Inferred, dict[str, Any]]:
    win = [a for a in _window(done, d, 28) if a.event.task_completed.project_id]
    if len(win) < 5:
        return None, {}
    frame = pd.DataFrame(
        {"project": [a.event.task_completed.project_id for a in win], "t": [a.t_ms for a in win]}
    )
    per = frame.groupby("project")["t"].agg(["count", "max"]).reset_index()
    per = per.sort_values(["count", "max", "project"], ascending=[False, False, True])
    return {"preferred_areas": (list(per["project"].head(2)), "inferred")}, {}


def _context(
    evs: list[Admitted], done: list[Admitted], d: int | None, cold: dict[str, Any]
) -> tuple[Inferred, dict[str, Any]]:
    """docs/features.md, `context`: contexts in admission order (for the 32-name bound), each
    context's state at a time read from its transitions sorted by (occurred_at, admission)."""
    changes = [a for a in evs if a.kind == "context_changed" and a.event.context_changed.context]
    if not changes:
        return None, {}
    transitions: dict[str, list[tuple[int, int, bool]]] = {}
    for a in changes:
        name = a.event.context_changed.context
        if name not in transitions and len(transitions) >= MAX_CONTEXTS:
            oldest = min(transitions, key=lambda c: max(transitions[c])[:2])
            del transitions[oldest]
        transitions.setdefault(name, []).append((a.t_ms, a.seq, a.event.context_changed.active))
    frame = pd.DataFrame(
        [(c, t, s, act) for c, runs in transitions.items() for t, s, act in runs],
        columns=["context", "t", "seq", "active"],
    ).sort_values(["context", "t", "seq"])
    latest = frame.groupby("context").tail(1)
    on = latest[latest["active"]].sort_values("context")
    win = _window(done, d, 28)
    counts: dict[str, int] = {}
    for context, runs in frame.groupby("context"):
        times = runs["t"].to_numpy()
        states = runs["active"].to_numpy()
        # The transition that stands at t: the last one with occurred_at <= t (ties: the later).
        idx = np.searchsorted(times, np.array([a.t_ms for a in win], dtype=np.int64), "right") - 1
        n = int(sum(1 for i in idx if i >= 0 and states[i]))
        if n:
            counts[str(context)] = n
    return {
        "active_contexts": ([str(c) for c in on["context"]], "inferred"),
        "active_since": (
            {str(c): int(t) for c, t in zip(on["context"], on["t"], strict=True)},
            "inferred",
        ),
        "done_in_context": (counts, "inferred"),
    }, {}


def _done_only(compute: Any) -> Any:
    """An agent whose definition reads done events only."""
    return lambda evs, done, d, cold: compute(done, d, cold)


COMPUTE: dict[str, Any] = {
    "time-of-day": _done_only(_time_of_day),
    "momentum": _done_only(_momentum),
    "overdue-task": _done_only(_overdue_lateness),
    "recent-patterns": _done_only(_recent_patterns),
    "focus-area": _done_only(_focus_area),
    "context": _context,
}
"""The dispatch: agent id -> (its events, its done events, D, cold start) -> (inferred, extras)."""
_WITHOUT_REFERENCE = sorted((set(AGENTS) - set(COMPUTE)) | (set(AGENTS) - set(COLD_START)))
if _WITHOUT_REFERENCE:
    raise RuntimeError(
        f"tests/reference.py: registered agents {_WITHOUT_REFERENCE} have no reference; "
        "write one from docs/features.md (features/README.md, 'Adding an agent', step 4)"
    )
