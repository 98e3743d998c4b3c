"""Snippets: one short sentence per warm agent, none in cold start (docs/features.md, Snippets)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from connectors.codec import from_json
from features.model import Incoming
from features.registry import REGISTRY
from features.state import UserState

START = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)


def done(i: int, when: datetime, *, project: str = "p1", late_days: float = 1.0) -> object:
    due = when - timedelta(days=late_days)
    return from_json(
        f'{{"eventId":"e{i}","userId":"u1","occurredAt":"{when:%Y-%m-%dT%H:%M:%SZ}",'
        f'"utcOffsetMinutes":60,"taskCompleted":{{"taskId":"t{i}","projectId":"{project}",'
        f'"dueAt":"{due:%Y-%m-%dT%H:%M:%SZ}"}}}}'
    )


def test_a_cold_start_agent_emits_no_snippet() -> None:
    state = UserState("u1")
    state.apply(Incoming.of(done(0, START)))
    outputs = state.outputs()
    assert set(outputs) == set(REGISTRY)
    assert all(out.cold_start and out.snippet is None for out in outputs.values())


def context(name: str, when: datetime, active: bool) -> object:
    return from_json(
        f'{{"eventId":"x-{name}-{when:%s}","userId":"u1","occurredAt":"{when:%Y-%m-%dT%H:%M:%SZ}",'
        f'"contextChanged":{{"context":"{name}","active":{str(active).lower()}}}}}'
    )


def test_every_warm_agent_says_one_short_sentence() -> None:
    state = UserState("u1")
    state.apply(Incoming.of(context("deep work", START, True)))
    n = 0
    for day in range(30):
        for hour in (8, 9, 14):
            state.apply(
                Incoming.of(done(n, START + timedelta(days=day, hours=hour), project=f"p{n % 3}"))
            )
            n += 1
    outputs = state.outputs()
    for agent_id, out in outputs.items():
        assert not out.cold_start, agent_id
        assert out.snippet and out.snippet.endswith(".") and out.snippet.count(". ") == 0, (
            out.snippet
        )
        assert len(out.snippet) < 200, out.snippet
    assert outputs["momentum"].snippet.startswith("So far today: 3 tasks done, ")
    assert outputs["context"].snippet == (
        "Active now: deep work; tasks done in the last 28 days: 84 while deep work."
    )


def test_counts_are_in_the_right_number() -> None:
    state = UserState("u1")
    for day in range(10):
        state.apply(Incoming.of(done(day, START + timedelta(days=day))))
    assert outputs_text(state, "momentum").startswith("So far today: 1 task done, ")
    assert outputs_text(state, "overdue-task").startswith("0 open tasks are overdue")


def outputs_text(state: UserState, agent_id: str) -> str:
    snippet = state.outputs([agent_id])[agent_id].snippet
    assert snippet is not None
    return snippet
