"""The engine (`features.state.UserState`) against the independent reference, on random logs.

Each example draws a whole event log (`tests.strategies.event_logs`: 1-3 users,
0-60 days, out-of-order delivery, duplicates, too-late events, zones and
offsets, preferences, consents, deletions), folds it into one `UserState` per
user in arrival order, and compares every parameter, extra, feedback counter
and drop counter with `tests.reference.reference_features` (floats to 1e-9).

How many logs: `OO_HYPOTHESIS_EXAMPLES` (default 300, well under 90 s on two
cores). For a thorough run of thousands of logs:

    OO_HYPOTHESIS_EXAMPLES=3000 .venv/bin/pytest tests/unit/test_features_property.py -q

On a failure Hypothesis prints the log (`Log(<<< ... >>>)`, one canonical JSON
event per line, in arrival order; `tests/strategies.py: load_log` reads it back)
and replays it first next time from its example database (`.hypothesis/`).
"""

from __future__ import annotations

import os
import pickle
from typing import Any

from hypothesis import HealthCheck, given, settings

from connectors.codec import validate
from features.model import Incoming
from features.state import UserState
from proto import events_pb2 as pb
from tests.reference import RefUser, reference_features
from tests.strategies import event_logs

EXAMPLES = int(os.environ.get("OO_HYPOTHESIS_EXAMPLES", "300"))
TOL = 1e-9
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def fold(events: list[pb.Event]) -> dict[str, UserState]:
    states: dict[str, UserState] = {}
    for e in events:
        if e.user_id not in states:
            states[e.user_id] = UserState(e.user_id)
        states[e.user_id].apply(Incoming.of(e))
    return states


def close(a: Any, b: Any, path: str = "") -> list[str]:
    """Differences between two JSON-like values; numbers compared to TOL."""
    num = (int, float)
    if isinstance(a, num) and isinstance(b, num) and not isinstance(a, bool | str):
        if isinstance(b, bool) or abs(float(a) - float(b)) > TOL:
            return [f"{path}: engine {a!r} != reference {b!r}"]
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{path}: engine keys {sorted(a)} != reference keys {sorted(b)}"]
        return [d for k in a for d in close(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return [f"{path}: engine {a!r} != reference {b!r}"]
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in close(x, y, f"{path}[{i}]")
        ]
    if a != b:
        return [f"{path}: engine {a!r} != reference {b!r}"]
    return []


def _trend_at_boundary(ref: RefUser) -> bool:
    """z within TOL of +-1: the trend may legitimately flip on float rounding."""
    z = ref.params.get("momentum", {}).get("z", {})
    value = z.get("inferred_value", z.get("value")) if z else None
    return isinstance(value, float) and min(abs(value - 1), abs(value + 1)) <= TOL


def _per_agent(per_agent: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    return {a: dict(c) for a, c in per_agent.items() if any(c.values())}


def differences(state: UserState, ref: RefUser) -> list[str]:
    diffs: list[str] = []
    if bool(state.deleted) != ref.deleted:
        diffs.append(f"deleted: engine {state.deleted} != reference {ref.deleted}")
    counters = {k: state.counters.get(k) for k in ref.counters}
    diffs += close(counters, ref.counters, "counters")
    fb = state.feedback()
    diffs += close(fb.get("feedback_events"), ref.feedback["feedback_events"], "feedback_events")
    rate, ref_rate = fb.get("acceptance_rate"), ref.feedback["acceptance_rate"]
    if (rate is None) != (ref_rate is None):
        diffs.append(f"acceptance_rate: engine {rate!r} != reference {ref_rate!r}")
    elif rate is not None:
        diffs += close(rate, ref_rate, "acceptance_rate")
    diffs += close(
        _per_agent(fb.get("per_agent", {})), _per_agent(ref.feedback["per_agent"]), "per_agent"
    )
    outs = state.outputs()
    if ref.deleted:
        if outs:
            diffs.append(f"deleted user still has outputs for {sorted(outs)}")
        return diffs
    if set(outs) != set(ref.params):
        diffs.append(f"agents: engine {sorted(outs)} != reference {sorted(ref.params)}")
    for agent in sorted(set(outs) & set(ref.params)):
        params = {name: p.as_dict() for name, p in outs[agent].params.items()}
        expected = ref.params[agent]
        if agent == "momentum" and _trend_at_boundary(ref):
            params = {k: v for k, v in params.items() if k != "engagement_trend"}
            expected = {k: v for k, v in expected.items() if k != "engagement_trend"}
        diffs += close(params, expected, f"{agent}.params")
        extras = outs[agent].extras
        for key, value in ref.extras[agent].items():
            if key not in extras:
                diffs.append(f"{agent}.extras: engine lacks {key!r}")
            else:
                diffs += close(extras[key], value, f"{agent}.extras.{key}")
    return diffs


@SETTINGS
@given(event_logs())
def test_engine_matches_reference(events: list[pb.Event]) -> None:
    states = fold(events)
    refs = reference_features(events)
    assert set(states) == set(refs)
    for uid in sorted(refs):
        diffs = differences(states[uid], refs[uid])
        assert not diffs, f"user {uid}:\n  " + "\n  ".join(diffs)


def _same(a: UserState, b: UserState) -> list[str]:
    """Differences between two engine states, as the reference would see them."""
    diffs = close(dict(a.counters), dict(b.counters), "counters")
    diffs += close(a.feedback(), b.feedback(), "feedback")
    if bool(a.deleted) != bool(b.deleted):
        diffs.append("deleted differs")
    oa, ob = a.outputs(), b.outputs()
    if set(oa) != set(ob):
        return [*diffs, f"agents {sorted(oa)} != {sorted(ob)}"]
    for agent in oa:
        diffs += close(
            {n: p.as_dict() for n, p in oa[agent].params.items()},
            {n: p.as_dict() for n, p in ob[agent].params.items()},
            f"{agent}.params",
        )
        diffs += close(oa[agent].extras, ob[agent].extras, f"{agent}.extras")
        if oa[agent].snippet != ob[agent].snippet:
            diffs.append(f"{agent}.snippet differs")
    return diffs


@settings(SETTINGS, max_examples=max(EXAMPLES // 3, 20))
@given(event_logs(max_users=1))
def test_pickled_state_resumes_identically(events: list[pb.Event]) -> None:
    half = len(events) // 2
    states = fold(events[:half])
    restored = {uid: pickle.loads(pickle.dumps(s)) for uid, s in states.items()}
    for uid, s in states.items():
        assert not _same(restored[uid], s), _same(restored[uid], s)
        # Every agent's state on its own: swapping in its round-tripped copy changes nothing.
        agents = getattr(s, "agents", None)
        if isinstance(agents, dict):
            for agent_id, agent in agents.items():
                copy = pickle.loads(pickle.dumps(restored[uid]))
                copy.agents = {**copy.agents, agent_id: pickle.loads(pickle.dumps(agent))}
                assert not _same(copy, s), (agent_id, _same(copy, s))
    for e in events[half:]:
        for group in (states, restored):
            if e.user_id not in group:
                group[e.user_id] = UserState(e.user_id)
            group[e.user_id].apply(Incoming.of(e))
    for uid in states:
        assert not _same(restored[uid], states[uid]), _same(restored[uid], states[uid])


@settings(SETTINGS, max_examples=50)
@given(event_logs())
def test_generated_logs_are_valid_events(events: list[pb.Event]) -> None:
    for e in events:
        validate(e, now_s=2_000_000_000)
