"""`evaluate_plain` (the write path's outputs, ADR 0031) gives exactly what `evaluate` gives.

`flows.folding.build_write` no longer builds `Param`s and `AgentOutput`s: it takes each
agent's parameters as `Param.as_dict()`, its extras and snippet from
`UserState.plain_outputs`, and the parameters of a cold start as a cold key it encodes once.
These tests hold that to `UserState.outputs` for every registered agent, along generated
histories (cold starts and warm states), with pinned preferences, and for the text the stores
write.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from connectors.store.base import dumps_compact
from features import inference
from features.model import Incoming
from features.registry import REGISTRY, agent_ids
from features.state import UserState
from flows.folding import Pending, build_write
from oo_features.generate import generate_events
from proto import events_pb2 as pb
from tests.strategies import ev

AGENTS = agent_ids()
_IDS = iter(range(10**9))


def _ev(kind: str, user: str, at_s: int, **fields: Any) -> pb.Event:
    return ev(f"e{next(_IDS)}", at_s, kind, user=user, **fields)


def _expected(state: UserState, agent_ids: list[str]) -> dict[str, Any]:
    return {
        a: ({n: p.as_dict() for n, p in o.params.items()}, o.extras, o.snippet)
        for a, o in state.outputs(agent_ids).items()
    }


def _plain(state: UserState, agent_ids: list[str]) -> dict[str, Any]:
    got = {}
    for agent_id, agent, (params, extras, snippet, cold_key) in state.plain_outputs(agent_ids):
        assert agent is state.agents[agent_id]
        if cold_key is not None:
            assert params is None and snippet is None
            params = inference.cold_params(cold_key)
        got[agent_id] = (params, extras, snippet)
    return got


def _walk(events: list[pb.Event], every: int) -> list[UserState]:
    """Copies of each user's state every `every` of its events, and at the end."""
    states: dict[str, UserState] = {}
    seen: dict[str, int] = {}
    out: list[UserState] = []
    for e in events:
        state = states.setdefault(e.user_id, UserState(e.user_id))
        state.apply(Incoming.of(e))
        seen[e.user_id] = seen.get(e.user_id, 0) + 1
        if seen[e.user_id] % every == 0:
            out.append(copy.deepcopy(state))
    return out + list(states.values())


@pytest.fixture(scope="module")
def states() -> list[UserState]:
    return _walk(list(generate_events(8, 40, 31)), every=7)


def test_plain_outputs_equal_the_outputs_along_histories(states: list[UserState]) -> None:
    cold = warm = 0
    for state in states:
        expected = _expected(state, AGENTS)
        assert _plain(state, AGENTS) == expected
        # The same text, byte for byte: what the stores write and the write dedupe hashes.
        for agent_id, (params, extras, _) in _plain(state, AGENTS).items():
            assert dumps_compact(params) == dumps_compact(expected[agent_id][0])
            assert dumps_compact(extras) == dumps_compact(expected[agent_id][1])
        for out in state.outputs(AGENTS).values():
            cold, warm = cold + out.cold_start, warm + (not out.cold_start)
    assert cold and warm, "the histories must reach both cold starts and inferred values"


def test_plain_outputs_follow_the_order_asked_and_skip_disabled_agents() -> None:
    state = UserState("u")
    assert list(state.plain_outputs(AGENTS)) == []  # no watermark yet: nothing to compute
    state.apply(Incoming.of(_ev("task_completed", "u", 1_000, task_id="t1")))
    wanted = [*reversed(AGENTS), "no-such-agent"]
    assert [a for a, _, _ in state.plain_outputs(wanted)] == list(reversed(AGENTS))
    assert _plain(state, wanted) == _expected(state, wanted)


def test_pinned_preferences_give_the_same_parameters() -> None:
    for agent_id in AGENTS:
        name = next(iter(REGISTRY[agent_id].MANIFEST.cold_start))
        for history in ([], list(generate_events(1, 30, 5))):
            state = UserState("u")
            for e in history:
                state.apply(Incoming.of(e))
            state.apply(Incoming.of(_ev("task_completed", "u", 2_000_000_000, task_id="t1")))
            state.apply(
                Incoming.of(
                    _ev(
                        "preference_set",
                        "u",
                        2_000_000_001,
                        agent_id=agent_id,
                        param=name,
                        value_json=json.dumps(7),
                    )
                )
            )
            got = _plain(state, [agent_id])
            assert got == _expected(state, [agent_id])
            assert got[agent_id][0][name]["source"] == "user"


def test_cold_params_are_fresh_copies() -> None:
    state = UserState("u")
    state.apply(Incoming.of(_ev("task_completed", "u", 1_000, task_id="t1")))
    for agent_id, _, (_, _, _, key) in state.plain_outputs(AGENTS):
        assert key is not None, f"{agent_id}: one event leaves every agent cold"
        first, second = inference.cold_params(key), inference.cold_params(key)
        assert first == second
        defaults = REGISTRY[agent_id].MANIFEST.cold_start
        for name, param in first.items():
            value = param["value"]
            if isinstance(value, list | dict | set):
                assert value is not second[name]["value"]
                assert value is not defaults.get(name)


def test_copier_copies_as_fresh_does() -> None:
    for default in (0, 1.5, "UTC", None, True, [], {}, set(), [9, 10, 11], [[1]], {"a": [1]}):
        copier = inference._copier(default)
        made = default if copier is None else copier(default)
        assert made == inference._fresh(default) and type(made) is type(default)
        if isinstance(default, list | dict | set):
            assert made is not default
        if default == [[1]]:
            assert made[0] is not default[0]  # type: ignore[index]


def test_build_write_writes_the_cold_text_of_each_context() -> None:
    """Two users of two time zones in cold start: each write carries its own zone's text."""
    writes = {}
    for user_id, tz in (("a", "Europe/Paris"), ("b", "Asia/Tokyo"), ("c", "Europe/Paris")):
        state = UserState(user_id)
        pending = Pending()
        pending.fold(state, [Incoming.of(_ev("profile_updated", user_id, 1_000, tz=tz), 7)])
        write = build_write(state, pending, computed_at_ms=5, written={})
        assert write is not None
        writes[user_id] = write.agents["time-of-day"]
        expected = _expected(state, ["time-of-day"])["time-of-day"][0]
        assert writes[user_id].params == expected
        assert writes[user_id].params_text() == dumps_compact(expected)
    assert json.loads(writes["a"].params_text())["tz"]["value"] == "Europe/Paris"
    assert json.loads(writes["b"].params_text())["tz"]["value"] == "Asia/Tokyo"
    assert writes["a"].params_text() is writes["c"].params_text()  # encoded once
    assert writes["a"].params is not writes["c"].params  # built for each write


def test_lag_samples_per_agent_clamped_and_spread() -> None:
    from connectors.store.base import LAG_SAMPLES_PER_WRITE, AgentWrite, UserWrite, lag_samples

    def write(i: int, agents: str, computed: int) -> UserWrite:
        return UserWrite(
            f"u{i}",
            agents={a: AgentWrite(a, "1", {}, {}, None, 1, 5, 1000 + i, computed) for a in agents},
        )

    n = 2 * LAG_SAMPLES_PER_WRITE
    writes = [write(i, "ba" if i % 2 else "a", 5000) for i in range(n)]
    lags = lag_samples(writes)
    assert list(lags) == ["a", "b"]
    assert lags["a"] == [4000 - 2 * k for k in range(LAG_SAMPLES_PER_WRITE)]  # evenly spread
    assert lags["b"] == [4000 - i for i in range(1, n, 2)]  # all of them: not more than kept
    assert lag_samples([write(9, "a", 5)]) == {"a": [0]}  # computed before ingest: no lag
    assert lag_samples([]) == {}
