"""Event builders and Hypothesis strategies for random `oo.events.v1` event logs.

`ev(...)` builds one validated-shaped event tersely (hand-written tests use it);
`event_logs()` draws whole logs for 1-3 users over 0-60 days that exercise the
non-cold paths of every agent, with the delivery faults the engine must absorb:
out-of-order arrival, duplicates, events too late to admit, profile zones and
per-event offsets, preferences (set and cleared), consent changes and deletions.

The bulk of a log comes from a `random.Random` seeded by Hypothesis: logs stay
reproducible (Hypothesis replays the seed) and drawing stays fast enough for
thousands of examples; the knobs that shape a log are drawn by Hypothesis.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st

from connectors.codec import to_json
from features.registry import agent_ids, manifest, manifests
from proto import events_pb2 as pb

AGENT_IDS = agent_ids(include_shadow=False)
CONTEXTS = ("travel", "deep work", "commuting", "focus")
ZONES = (
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "UTC",
    "Pacific/Auckland",
)
PROJECTS = ("p1", "p2", "p3", "p4")
BASE_S = int(datetime(2025, 3, 1, tzinfo=UTC).timestamp())
DAY_S = 86_400


def ts_s(text: str) -> int:
    """Epoch seconds of an ISO-8601 UTC time such as '2025-03-01T09:30:00'."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def ev(
    event_id: str,
    at: int | str,
    kind: str,
    *,
    user: str = "u1",
    offset: int | None = None,
    **fields: Any,
) -> pb.Event:
    """One event: `at` in epoch seconds or ISO UTC; `fields` fill the payload.

    Timestamp fields (`due_at`, `starts_at`, `ends_at`) also take epoch seconds
    or ISO text.

    >>> e = ev("e1", "2025-03-01T10:00:00", "task_completed", task_id="t1", due_at=0)
    >>> e.WhichOneof("payload"), e.task_completed.due_at.seconds
    ('task_completed', 0)
    """
    e = pb.Event(event_id=event_id, user_id=user, source="test")
    e.occurred_at.seconds = ts_s(at) if isinstance(at, str) else at
    if offset is not None:
        e.utc_offset_minutes = offset
    payload = getattr(e, kind)
    payload.SetInParent()
    for name, value in fields.items():
        if name in ("due_at", "starts_at", "ends_at"):
            getattr(payload, name).seconds = ts_s(value) if isinstance(value, str) else value
        elif name == "agent_ids":
            payload.agent_ids.extend(value)
        else:
            setattr(payload, name, value)
    return e


# ----------------------------------------------------------------- random logs


def _pref_value(rng: random.Random, agent: str, param: str) -> Any:
    hours = list(range(24))
    values: dict[tuple[str, str], Any] = {
        ("time-of-day", "preferred_hour"): rng.choice(hours),
        ("time-of-day", "quiet_start"): rng.choice(hours),
        ("time-of-day", "quiet_end"): rng.choice(hours),
        ("time-of-day", "peak_hours"): sorted(rng.sample(hours, rng.randint(1, 4))),
        ("time-of-day", "tz"): rng.choice(ZONES),
        ("momentum", "baseline_completions_per_day"): round(rng.uniform(0, 8), 2),
        ("momentum", "stdev"): round(rng.uniform(0, 3), 2),
        ("momentum", "z"): round(rng.uniform(-3, 3), 2),
        ("momentum", "engagement_trend"): rng.choice(["rising", "steady", "falling"]),
        ("overdue-task", "lateness_tolerance_days"): rng.choice(
            [0.0, 0.5, 1.0, 2.0, 3.25, round(rng.uniform(-1, 5), 3)]
        ),
        ("overdue-task", "project_realness"): {p: round(rng.random(), 2) for p in PROJECTS[:2]},
        ("recent-patterns", "lookback_days"): rng.choice([7, 14, 28, 56, 112]),
        ("recent-patterns", "weekly_cycle"): round(rng.random(), 2),
        ("recent-patterns", "daily_cycle"): round(rng.random(), 2),
        ("focus-area", "preferred_areas"): rng.sample(PROJECTS, 2),
        ("context", "active_contexts"): sorted(rng.sample(CONTEXTS, 2)),
        ("context", "done_in_context"): {rng.choice(CONTEXTS): rng.randint(0, 9)},
    }
    if (agent, param) in values:
        return values[(agent, param)]
    return manifest(agent).cold_start[param]


PREF_KEYS: tuple[tuple[str, str], ...] = tuple(
    (m.id, param) for m in manifests() for param in m.cold_start
)
"""Every (agent, parameter) of the registered agents; a parameter without a drawn value above
is pinned to its cold-start default."""


class _UserLog:
    """Draws one user's events in occurred_at order (arrival faults come later)."""

    def __init__(self, rng: random.Random, user: str, knobs: dict[str, Any]) -> None:
        self.rng = rng
        self.user = user
        self.k = knobs
        self.n = 0
        self.events: list[pb.Event] = []
        self.start = BASE_S + rng.randint(0, 300) * DAY_S + rng.randint(0, DAY_S - 1)
        self.span = knobs["span_days"] * DAY_S + rng.randint(0, DAY_S - 1)
        self.base_offset = rng.randrange(-56, 57) * 15
        peaks = [rng.randrange(24) for _ in range(rng.randint(1, 3))]
        self.peaks = peaks

    def offset(self) -> int | None:
        p = self.rng.random()
        if p < self.k["p_no_offset"]:
            return None
        if p < 0.95:
            return self.base_offset
        return self.rng.randrange(-56, 57) * 15

    def add(self, at: int, kind: str, **fields: Any) -> pb.Event:
        self.n += 1
        e = ev(f"{self.user}-e{self.n}", at, kind, user=self.user, offset=self.offset(), **fields)
        self.events.append(e)
        return e

    def when(self) -> int:
        """A completion time: a random day in the span, an hour near one of the user's peaks."""
        rng = self.rng
        day = rng.randint(0, self.span // DAY_S)
        hour = int(rng.gauss(rng.choice(self.peaks), self.k["hour_spread"])) % 24
        t = self.start + day * DAY_S + hour * 3600 + rng.randint(0, 3599)
        # Align to the user's own day so the hour pattern survives the offset.
        return min(t - self.base_offset * 60, self.start + self.span)

    def build(self) -> list[pb.Event]:
        rng, k = self.rng, self.k
        end = self.start + self.span
        if rng.random() < k["p_profile"]:
            self.add(self.start - rng.randint(0, DAY_S), "profile_updated", tz=rng.choice(ZONES))
        for _ in range(rng.randint(0, 2)):
            self.add(rng.randint(self.start, end), "profile_updated", tz=rng.choice(ZONES))
        mean_late = rng.uniform(-2, 3)
        for i in range(k["n_done"]):
            t = max(self.when(), self.start)
            task = f"t{i}"
            project = rng.choice((*PROJECTS, "")) if rng.random() < 0.9 else ""
            fields: dict[str, Any] = {"task_id": task, "project_id": project}
            if rng.random() < k["p_due"]:
                due = int(t - rng.gauss(mean_late, 1.5) * DAY_S)
                fields["due_at"] = due
                if rng.random() < 0.5:
                    created = {"task_id": task, "project_id": project, "due_at": due}
                    self.add(max(t - rng.randint(0, 5 * DAY_S), 0), "task_created", **created)
            self.add(t, "task_completed", **fields)
        for i in range(k["n_open"]):
            task = f"o{i}"
            t = rng.randint(self.start, end)
            due = t + rng.randint(-3 * DAY_S, 10 * DAY_S)
            due_field = {"due_at": due} if rng.random() < 0.9 else {}
            self.add(t, "task_created", task_id=task, project_id=rng.choice(PROJECTS), **due_field)
            p = rng.random()
            later = t + rng.randint(0, 4 * DAY_S)
            if p < 0.2:
                self.add(later, "task_deleted", task_id=task)
            elif p < 0.4:
                upd = {"due_at": due + rng.randint(-DAY_S, 5 * DAY_S)} if rng.random() < 0.8 else {}
                self.add(later, "task_updated", task_id=task, project_id="p1", **upd)
            elif p < 0.5:
                self.add(later, "task_completed", task_id=task, project_id="", due_at=due)
        for _ in range(k["n_other"]):
            t = rng.randint(self.start, end)
            kind = rng.choice(("habit", "calendar", "mood", "context"))
            if kind == "habit":
                self.add(t, "habit_checked", habit_id="h1")
            elif kind == "calendar":
                self.add(t, "calendar_event_observed", calendar_event_id="c1", starts_at=t)
            elif kind == "mood":
                self.add(t, "mood_logged", score=rng.randint(1, 5))
            else:
                self.add(t, "context_changed", context="commuting", active=rng.random() < 0.5)
        for i in range(k["n_tips"]):
            t = rng.randint(self.start, end)
            tip = f"{self.user}-tip{i}"
            agents = rng.sample((*AGENT_IDS, "other-agent"), rng.randint(1, 3))
            self.add(t, "tip_shown", tip_id=tip, agent_ids=agents)
            for _ in range(rng.choice((0, 1, 1, 1, 2))):
                react = {"reaction": rng.randint(0, 4), "tip_id": tip}
                if rng.random() < 0.1:
                    react["tip_id"] = "unknown-tip"
                self.add(t + rng.randint(1, 3 * DAY_S), "tip_reaction", **react)
        for _ in range(k["n_prefs"]):
            t = rng.randint(self.start, end)
            if rng.random() < 0.1:
                self.add(t, "preference_set", agent_id="nobody", param="x", value_json="1")
                continue
            agent, param = rng.choice(PREF_KEYS)
            if rng.random() < 0.05:
                param = "no_such_param"
                value = "1"
            elif rng.random() < 0.25:
                value = ""
            else:
                value = json.dumps(_pref_value(rng, agent, param))
            self.add(t, "preference_set", agent_id=agent, param=param, value_json=value)
        for _ in range(k["n_consents"]):
            t = rng.randint(self.start, end)
            consent = rng.choice(("tasks", "tasks", "tasks", "context", "calendar"))
            self.add(t, "consent_changed", consent=consent, granted=rng.random() < 0.5)
        if rng.random() < k["p_delete"]:
            # Anywhere in the span, or after everything (the user ends deleted).
            at = rng.choice((rng.randint(self.start, end), end + DAY_S))
            self.add(at, "user_deleted")
        self.events.sort(key=lambda e: (e.occurred_at.seconds, e.event_id))
        return self.events


def deliver(rng: random.Random, events: list[pb.Event], knobs: dict[str, Any]) -> list[pb.Event]:
    """Arrival order: shuffles within windows, delays (some beyond the lateness), duplicates."""
    out = list(events)
    w = knobs["shuffle_window"]
    if w > 1:
        for i in range(0, len(out), w):
            chunk = out[i : i + w]
            rng.shuffle(chunk)
            out[i : i + w] = chunk
    # Move some events later in arrival; by how many positions decides how late they are.
    for _ in range(int(len(out) * knobs["p_delay"])):
        if len(out) < 2:
            break
        i = rng.randrange(len(out))
        e = out.pop(i)
        out.insert(rng.randint(i, len(out)), e)
    for _ in range(int(len(out) * knobs["p_dup"])):
        i = rng.randrange(len(out))
        dup = pb.Event()
        dup.CopyFrom(out[i])
        out.insert(rng.randint(i + 1, len(out)), dup)
    # A replay of earlier events at the end (duplicates, or dropped as late or deleted).
    if knobs["p_replay"]:
        out.extend(rng.sample(out, int(len(out) * knobs["p_replay"])))
    return out


class Log(list[pb.Event]):
    """A list of events whose repr is one canonical JSON line per event (short failure reports)."""

    def __repr__(self) -> str:
        return "Log(<<<\n" + "\n".join(to_json(e) for e in self) + "\n>>>)"


@st.composite
def event_logs(draw: st.DrawFn, max_users: int = 3) -> list[pb.Event]:
    """A whole log for 1..max_users users, interleaved, in arrival order."""
    n_users = draw(st.integers(1, max_users))
    rng = draw(st.randoms(use_true_random=True))
    per_user: list[list[pb.Event]] = []
    for u in range(n_users):
        knobs = {
            "span_days": draw(st.sampled_from((0, 3, 10, 20, 35, 60))),
            "n_done": draw(st.sampled_from((0, 4, 12, 25, 40, 80, 150, 200))),
            "n_open": draw(st.integers(0, 8)),
            "n_other": draw(st.integers(0, 10)),
            "n_contexts": draw(st.sampled_from((0, 0, 2, 6, 15))),
            "n_tips": draw(st.integers(0, 8)),
            "n_prefs": draw(st.sampled_from((0, 0, 1, 3, 6))),
            "n_consents": draw(st.sampled_from((0, 0, 0, 1, 2, 4))),
            "p_delete": draw(st.sampled_from((0.0, 0.0, 0.3))),
            "p_profile": draw(st.sampled_from((0.0, 0.6, 1.0))),
            "p_no_offset": draw(st.sampled_from((0.0, 0.3, 1.0))),
            "p_due": draw(st.sampled_from((0.0, 0.3, 0.8))),
            "hour_spread": draw(st.sampled_from((0.5, 2.0, 6.0))),
            "shuffle_window": draw(st.sampled_from((1, 3, 10, 40))),
            "p_delay": draw(st.sampled_from((0.0, 0.02, 0.1))),
            "p_dup": draw(st.sampled_from((0.0, 0.03, 0.1))),
            "p_replay": draw(st.sampled_from((0.0, 0.0, 0.2))),
        }
        user_events = _UserLog(rng, f"u{u + 1}", knobs).build()
        per_user.append(deliver(rng, user_events, knobs))
    # Interleave users while keeping each user's arrival order.
    merged: list[pb.Event] = []
    cursors = [0] * n_users
    while any(c < len(evs) for c, evs in zip(cursors, per_user, strict=True)):
        u = rng.choice([i for i, evs in enumerate(per_user) if cursors[i] < len(evs)])
        merged.append(per_user[u][cursors[u]])
        cursors[u] += 1
    return Log(merged)


def load_log(text: str) -> list[pb.Event]:
    """The events of a printed `Log(<<< ... >>>)` (or any canonical JSON lines), for replaying."""
    from connectors.codec import from_json

    body = text.split("<<<", 1)[-1].split(">>>", 1)[0]
    return [from_json(line) for line in body.splitlines() if line.strip().startswith("{")]
