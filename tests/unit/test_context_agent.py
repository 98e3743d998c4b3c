"""The sixth agent, `context`, against its reference (tests/reference.py) on generated
histories with contexts: the generator's commuting, focus and travel runs delivered with
out-of-order events, duplicates and too-late events, plus the 32-name bound."""

from __future__ import annotations

from typing import Any

import pytest

from features.agents.context import MAX_CONTEXTS
from features.model import Incoming
from features.state import UserState
from oo_features.generate import ChaosOptions, generate_events
from proto import events_pb2 as pb
from tests.reference import reference_features
from tests.strategies import DAY_S, ev
from tests.unit.test_features_property import close, fold

USERS, DAYS, SEED = 40, 50, 6060


@pytest.fixture(scope="module")
def history() -> list[pb.Event]:
    chaos = ChaosOptions(out_of_order=0.05, duplicates=0.02, too_late=0.01)
    return list(generate_events(USERS, DAYS, SEED, chaos=chaos))


def _params(state: UserState) -> dict[str, Any] | None:
    out = state.outputs(["context"]).get("context")
    return None if out is None else {n: p.as_dict() for n, p in out.params.items()}


def test_the_generator_produces_context_events(history: list[pb.Event]) -> None:
    changes = [e.context_changed for e in history if e.WhichOneof("payload") == "context_changed"]
    assert {c.context for c in changes} >= {"commuting", "focus", "travel"}
    assert {c.active for c in changes} == {True, False}


def test_context_equals_the_reference_on_generated_histories(history: list[pb.Event]) -> None:
    states, refs = fold(history), reference_features(history)
    inferred = in_context = 0
    for uid, ref in sorted(refs.items()):
        got = _params(states[uid])
        expected = ref.params.get("context")
        assert (got is None) == (expected is None), uid
        if got is None:
            continue
        diffs = close(got, expected, f"{uid}.context")
        assert not diffs, "\n".join(diffs)
        inferred += got["active_contexts"]["source"] == "inferred"
        in_context += bool(got["done_in_context"]["value"])
    # The histories exercise the agent, not only its cold start.
    assert inferred >= USERS // 2 and in_context >= USERS // 4, (inferred, in_context)


def test_at_most_32_names_the_oldest_is_forgotten() -> None:
    base = 1_741_000_000
    events = [
        ev(f"x{i}", base + i * 60, "context_changed", context=f"c{i:02d}", active=True)
        for i in range(MAX_CONTEXTS + 8)
    ]
    # c00 comes back: it is new again (its first life was forgotten), c08 is now the oldest.
    events.append(ev("again", base + DAY_S, "context_changed", context="c00", active=True))
    events.append(ev("d1", base + DAY_S + 1, "task_completed", task_id="t"))
    state = UserState("u1")
    for e in events:
        state.apply(Incoming.of(e))
    got = _params(state)
    assert got is not None
    active = got["active_contexts"]["value"]
    assert len(active) == MAX_CONTEXTS and "c08" not in active and "c00" in active
    assert close(got, reference_features(events)["u1"].params["context"]) == []


def test_revoking_the_context_consent_removes_the_agent_only() -> None:
    events = [
        ev("x1", "2025-03-10T08:00:00", "context_changed", context="travel", active=True),
        ev("r", "2025-03-10T09:00:00", "consent_changed", consent="context", granted=False),
    ]
    state = UserState("u1")
    applied = [state.apply(Incoming.of(e)) for e in events]
    assert applied[-1].removed == {"context"}
    assert "context" not in state.outputs() and "momentum" in state.outputs()
