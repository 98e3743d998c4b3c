"""`bench/serve.py`'s store seeding: realistic per-user agent writes (snippets, parameters,
the overdue-task extras) written through the store's own `write_batch`."""

from __future__ import annotations

import random
import time
from typing import Any

from connectors import clock
from connectors.store import AgentWrite, UserWrite, open_store
from features.registry import manifests

AGENTS: dict[str, tuple[str, Any]] = {}  # filled by _agent_writes

SNIPPETS = {
    "focus-area": "Most of your completions over the last four weeks were in {a} and {b}; "
    "those two projects are where your effort goes.",
    "momentum": "You have completed {n} tasks today, {z:.1f} standard deviations above your "
    "28-day baseline of {base:.1f} per day: momentum is {trend}.",
    "overdue-task": "'{task}' in {a} is {days} days overdue; tasks in {a} usually slip by "
    "about {tol:.1f} days, so this one is later than usual.",
    "recent-patterns": "Your completions follow a weekly cycle (strength {w:.2f}) more than a "
    "daily one ({d:.2f}) over the last {lb} days.",
    "time-of-day": "You finish most tasks around {h}:00; your peak hours are {p} and you are "
    "usually quiet between {qs}:00 and {qe}:00.",
}
PROJECTS = ["work", "home", "side-project", "health", "finance", "learning", "garden"]
TASKS = [
    "Quarterly report",
    "Dentist appointment",
    "Renew passport",
    "Fix the bike",
    "Reply to Anna",
    "Tax return",
    "Plan the offsite",
    "Water the plants",
]


# -- seeding --------------------------------------------------------------------------------


def _p(value: Any, source: str = "inferred") -> dict[str, Any]:
    return {"value": value, "source": source}


def _user_write(uid: str, rng: random.Random, now_ms: int) -> UserWrite:
    a, b = rng.sample(PROJECTS, 2)
    base = rng.uniform(0.5, 8.0)
    stdev = rng.uniform(0.3, 3.0)
    n = rng.randint(0, 15)
    z = (n - base) / stdev
    trend = "rising" if z > 1 else "falling" if z < -1 else "steady"
    tol = rng.uniform(0.0, 4.0)
    h = rng.randint(6, 22)
    peak = sorted(rng.sample(range(6, 23), 3))
    w, d = rng.random(), rng.random()
    lb = rng.choice([14, 28, 56])
    task = rng.choice(TASKS)
    days = rng.randint(1, 20)
    params = {
        "focus-area": {"preferred_areas": _p([a, b])},
        "momentum": {
            "baseline_completions_per_day": _p(round(base, 3)),
            "stdev": _p(round(stdev, 3)),
            "z": _p(round(z, 3)),
            "engagement_trend": _p(trend),
        },
        "overdue-task": {
            "lateness_tolerance_days": _p(round(tol, 2)),
            "project_realness": _p({p: round(rng.random(), 3) for p in rng.sample(PROJECTS, 4)}),
        },
        "recent-patterns": {
            "lookback_days": _p(lb),
            "weekly_cycle": _p(round(w, 3)),
            "daily_cycle": _p(round(d, 3)),
        },
        "time-of-day": {
            "preferred_hour": _p(h),
            "quiet_start": {"value": 23, "source": "user", "inferred_value": 22},
            "quiet_end": _p(7, "cold_start"),
            "peak_hours": _p(peak),
            "tz": {"value": "Europe/Berlin", "source": "user", "inferred_value": "UTC"},
        },
    }
    extras: dict[str, dict[str, Any]] = {
        "overdue-task": {
            "overdue": [
                {
                    "task_id": f"t-{rng.randrange(10**6)}",
                    "title": task,
                    "project": a,
                    "days_overdue": days,
                }
            ]
        },
        "focus-area": {"completions_28d": {a: rng.randint(10, 60), b: rng.randint(5, 30)}},
    }
    texts = {
        "focus-area": SNIPPETS["focus-area"].format(a=a, b=b),
        "momentum": SNIPPETS["momentum"].format(n=n, z=z, base=base, trend=trend),
        "overdue-task": SNIPPETS["overdue-task"].format(task=task, a=a, days=days, tol=tol),
        "recent-patterns": SNIPPETS["recent-patterns"].format(w=w, d=d, lb=lb),
        "time-of-day": SNIPPETS["time-of-day"].format(
            h=h, p=", ".join(map(str, peak)), qs=23, qe=7
        ),
    }
    # Every registered agent is seeded: those without hand-written values above get their
    # manifest's cold-start values and a generic sentence, so a new agent needs no edit here.
    for m in manifests():
        if m.id not in params:
            params[m.id] = {name: _p(value, "cold_start") for name, value in m.cold_start.items()}
            texts[m.id] = f"{m.description} (seeded by bench/serve.py)"
    event_ms = now_ms - rng.randint(0, 3_600_000)
    agents = {
        agent_id: AgentWrite(
            agent_id=agent_id,
            version="1.0.0",
            params=params[agent_id],
            extras=extras.get(agent_id, {}),
            snippet=texts[agent_id],
            ttl_seconds=7 * 86_400,
            event_time_ms=event_ms,
            ingest_time_ms=event_ms + rng.randint(1, 500),
            computed_at_ms=now_ms,
        )
        for agent_id in params
    }
    return UserWrite(
        user_id=uid,
        agents=agents,
        feedback={"last_reaction": "helpful", "tips_shown": rng.randint(0, 40)},
        consents={"tasks": True},
        newest_event_ms=event_ms,
        newest_ingest_ms=event_ms + 1,
    )


def seed(store_url: str, key_prefix: str, users: int) -> tuple[list[str], float]:
    store = open_store(store_url, key_prefix=key_prefix)
    rng = random.Random(42)
    now_ms = clock.now_ms()
    ids = [f"u-{i}" for i in range(users)]
    t = time.perf_counter()
    for i in range(0, users, 500):
        store.write_batch(
            [_user_write(uid, rng, now_ms) for uid in ids[i : i + 500]], now_ms=now_ms
        )
    elapsed = time.perf_counter() - t
    probe = store.read_user(ids[-1])
    assert probe is not None and len(probe.agents) == len(manifests()), "seeding failed"
    assert all(a.snippet for a in probe.agents.values()), "snippets missing after seeding"
    store.close()
    return ids, elapsed
