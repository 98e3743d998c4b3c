"""The contract every registered agent keeps, one parametrised test per clause (like river's
single test over every statistic). A new agent module is checked here without any edit.

Clauses: its parameters are its manifest's (and the reference's); it is pure and
deterministic (the same events give the same outputs, computing changes no state); its state
pickles and round-trips; its state stays bounded however long the history; below its data
guard it answers its cold-start defaults without a snippet; an exception in its inference
becomes cold start and is counted. The registry refuses a malformed agent module by name.
"""

from __future__ import annotations

import pickle
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from features import inference
from features.model import Incoming
from features.registry import REGISTRY, AgentModuleError, agent_ids, discover, manifest
from features.state import UserState
from oo_features.generate import generate_events
from proto import events_pb2 as pb
from tests import reference
from tests.strategies import DAY_S, ev

AGENTS = agent_ids()
USERS, DAYS, SEED = 6, 45, 1313


def fold(events: list[pb.Event]) -> dict[str, UserState]:
    states: dict[str, UserState] = {}
    for e in events:
        states.setdefault(e.user_id, UserState(e.user_id)).apply(Incoming.of(e))
    return states


@pytest.fixture(scope="module")
def history() -> list[pb.Event]:
    return list(generate_events(USERS, DAYS, SEED))


@pytest.fixture(scope="module")
def folded(history: list[pb.Event]) -> dict[str, UserState]:
    return fold(history)


def _as_dicts(outputs: dict[str, Any]) -> dict[str, Any]:
    return {
        a: ({n: p.as_dict() for n, p in o.params.items()}, o.extras, o.snippet, o.cold_start)
        for a, o in outputs.items()
    }


def test_the_reference_covers_exactly_the_registry() -> None:
    assert set(reference.COMPUTE) == set(REGISTRY), "tests/reference.py dispatch != registry"
    assert set(reference.COLD_START) == set(REGISTRY)


@pytest.mark.parametrize("agent_id", AGENTS)
def test_params_match_the_manifest_and_the_reference(
    agent_id: str, folded: dict[str, UserState]
) -> None:
    cold_start = manifest(agent_id).cold_start
    assert list(reference.COLD_START[agent_id]) == list(cold_start)
    assert reference.COLD_START[agent_id] == cold_start
    assert reference.REQUIRED_CONSENTS[agent_id] == manifest(agent_id).required_consents
    inferred = 0
    for state in folded.values():
        out = state.outputs([agent_id]).get(agent_id)
        if out is None:
            continue
        assert list(out.params) == list(cold_start)
        inferred += not out.cold_start
    # The generated history exercises the agent beyond cold start.
    assert inferred > 0, f"{agent_id}: no generated user gets past the data guard"


@pytest.mark.parametrize("agent_id", AGENTS)
def test_pure_and_deterministic(agent_id: str, history: list[pb.Event]) -> None:
    first, second = fold(history), fold(history)
    for uid, state in first.items():
        before = pickle.dumps(state.agents.get(agent_id))
        a = _as_dicts(state.outputs([agent_id]))
        assert pickle.dumps(state.agents.get(agent_id)) == before, "computing changed state"
        assert _as_dicts(state.outputs([agent_id])) == a, "two computations differ"
        assert _as_dicts(second[uid].outputs([agent_id])) == a, "two folds differ"


@pytest.mark.parametrize("agent_id", AGENTS)
def test_state_pickles_and_round_trips(agent_id: str, folded: dict[str, UserState]) -> None:
    for state in folded.values():
        agent = state.agents.get(agent_id)
        if agent is None:
            continue
        back = pickle.loads(pickle.dumps(agent))
        assert back == agent
        copy = pickle.loads(pickle.dumps(state))
        assert _as_dicts(copy.outputs([agent_id])) == _as_dicts(state.outputs([agent_id]))


def _heavy_days(start_day: int, days: int) -> Iterator[pb.Event]:
    """A person who does a lot every day and never closes anything else, with ever new
    context names: every agent's state would grow without its bound."""
    base = 1_740_000_000
    n = 0
    for d in range(start_day, start_day + days):
        day = base + d * DAY_S
        for i in range(25):
            n += 1
            t = day + 6 * 3600 + i * 1800
            yield ev(
                f"c{n:07d}",
                t,
                "task_completed",
                task_id=f"d{n:07d}",
                project_id=f"p{n % 40}",
                due_at=t - (n % 5) * DAY_S,
                offset=60,
            )
            yield ev(
                f"o{n:07d}",
                t + 1,
                "task_created",
                task_id=f"open{n:07d}",
                project_id="p1",
                due_at=t - DAY_S,
                offset=60,
            )
        for i in range(4):
            n += 1
            yield ev(
                f"x{n:07d}",
                day + 8 * 3600 + i * 7200,
                "context_changed",
                context=f"ctx{n % 97}",
                active=i % 2 == 0,
                offset=60,
            )


@pytest.mark.parametrize("agent_id", AGENTS)
def test_state_stays_bounded(agent_id: str) -> None:
    state = UserState("heavy")
    sizes = []
    for chunk in range(4):
        for e in _heavy_days(chunk * 60, 60):
            state.apply(Incoming.of(e))
        state.outputs([agent_id])
        sizes.append(len(pickle.dumps(state.agents[agent_id])))
    # Past its longest window (and overdue-task's last 50 values for each of 40 projects),
    # more history adds nothing; compression and which tasks are open vary a little.
    assert max(sizes[2:]) <= sizes[1] * 1.3 + 512, f"{agent_id} state grows: {sizes} bytes"


@pytest.mark.parametrize("agent_id", AGENTS)
def test_cold_start_below_the_data_guard(agent_id: str) -> None:
    state = UserState("new")
    state.apply(
        Incoming.of(ev("e1", "2025-03-01T10:00:00", "habit_checked", user="new", habit_id="h"))
    )
    out = state.outputs([agent_id])[agent_id]
    m = manifest(agent_id)
    assert out.cold_start and out.snippet is None
    assert {n: p.source for n, p in out.params.items()} == dict.fromkeys(m.cold_start, "cold_start")
    assert {n: p.value for n, p in out.params.items()} == m.cold_start


@pytest.mark.parametrize("agent_id", AGENTS)
def test_an_exception_becomes_cold_start_and_is_counted(
    agent_id: str, folded: dict[str, UserState], monkeypatch: pytest.MonkeyPatch
) -> None:
    state = next(s for s in folded.values() if not s.outputs([agent_id])[agent_id].cold_start)

    def broken(self: Any, asof: Any, preferences: Any) -> Any:
        raise ZeroDivisionError("a bug in the agent")

    monkeypatch.setattr(REGISTRY[agent_id], "infer", broken)
    before = inference.INFERENCE_ERRORS[agent_id]
    out = state.outputs([agent_id])[agent_id]
    assert inference.INFERENCE_ERRORS[agent_id] == before + 1
    assert out.cold_start and out.snippet is None
    assert all(p.source in ("cold_start", "user") for p in out.params.values())


# ------------------------------------------------------------------ malformed agent modules

GOOD = """
    from features.agent import AgentBase, Inference
    from features.model import Manifest

    MANIFEST = Manifest(id="{id}", version="1.0.0", ttl_seconds=60, freshness_sla_seconds=60,
                        min_history=0, required_consents=(), reads=({reads!r},),
                        cold_start={{"x": 0}})

    class Agent(AgentBase):
        def apply(self, event, asof):
            return False

        def infer(self, asof, preferences):
            return Inference(None, {{}})

        {snippet}
"""
SNIPPET = "def snippet(self, params, extras):\n            return ''"


def _package(tmp_path: Path, name: str, modules: dict[str, str]) -> Any:
    root = tmp_path / name
    root.mkdir()
    (root / "__init__.py").write_text("")
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))
    sys.path.insert(0, str(tmp_path))
    try:
        import importlib

        return importlib.import_module(name)
    finally:
        sys.path.remove(str(tmp_path))


def _good(agent_id: str = "ok", reads: str = "task_completed", snippet: str = SNIPPET) -> str:
    return GOOD.format(id=agent_id, reads=reads, snippet=snippet)


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("X = 1\n", "no MANIFEST; no Agent class"),
        (_good(snippet=""), "Agent does not define snippet()"),
        (_good(reads="task_finished"), "unknown payload kinds ['task_finished']"),
        (_good().replace('version="1.0.0"', 'version="one"'), "is not semver"),
        (_good().replace("class Agent(AgentBase)", "class Agent"), "not a subclass"),
        ("import no_such_module_here\n", "import failed"),
    ],
    ids=["empty", "no-snippet", "bad-reads", "bad-version", "not-agentbase", "import-error"],
)
def test_a_malformed_agent_module_fails_naming_it(
    tmp_path: Path, source: str, words: str, request: pytest.FixtureRequest
) -> None:
    name = f"broken_agents_{request.node.callspec.id.replace('-', '_')}"
    package = _package(tmp_path, name, {"fine": _good("fine"), "broken": source})
    with pytest.raises(AgentModuleError) as caught:
        discover(package)
    assert f"agent module {name}.broken" in str(caught.value)
    assert words in str(caught.value)


def test_two_modules_with_one_id_fail_naming_both(tmp_path: Path) -> None:
    package = _package(tmp_path, "twin_agents", {"a": _good("same"), "b": _good("same")})
    with pytest.raises(
        AgentModuleError,
        match=r"twin_agents\.b: id 'same' is already used by "
        r"twin_agents\.a",
    ):
        discover(package)


def test_a_well_formed_package_is_discovered(tmp_path: Path) -> None:
    package = _package(tmp_path, "fine_agents", {"one": _good("one"), "_helper": "X = 1\n"})
    assert list(discover(package)) == ["one"]
