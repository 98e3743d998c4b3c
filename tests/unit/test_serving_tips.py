"""Eligibility, freshness and the deterministic fallback choice."""

from __future__ import annotations

import itertools

from connectors.store.base import StoredAgent, StoredUser
from features.model import Manifest
from serving.tips import eligible_agents, fallback_tip, fresh_snippets

NOW = 1_780_000_000_000


def manifest(agent_id: str, ttl: int, consents: tuple[str, ...] = ("tasks",)) -> Manifest:
    return Manifest(
        id=agent_id,
        version="1.0.0",
        ttl_seconds=ttl,
        freshness_sla_seconds=60,
        min_history=0,
        required_consents=consents,
        reads=("task_completed",),
        cold_start={},
    )


MANIFESTS = {
    "overdue-task": manifest("overdue-task", 1800),
    "momentum": manifest("momentum", 3600),
    "time-of-day": manifest("time-of-day", 21600),
    "recent-patterns": manifest("recent-patterns", 86400),
    "moods": manifest("moods", 3600, consents=("mood",)),
}


def agent(
    agent_id: str,
    snippet: str | None = "some text",
    *,
    computed_at: int = NOW - 1000,
    expires_at: int | None = NOW + 60_000,
) -> StoredAgent:
    return StoredAgent(
        agent_id=agent_id,
        version="1.0.0",
        params={},
        extras={},
        event_time_ms=computed_at - 10,
        ingest_time_ms=computed_at - 5,
        computed_at_ms=computed_at,
        snippet=snippet,
        snippet_expires_at_ms=expires_at if snippet is not None else None,
    )


def user(*agents: StoredAgent, consents: dict[str, bool] | None = None) -> StoredUser:
    return StoredUser(
        user_id="u1",
        agents={a.agent_id: a for a in agents},
        feedback={},
        consents=consents or {},
        newest_event_ms=None,
        newest_ingest_ms=None,
    )


def choose(*agents: StoredAgent, consents: dict[str, bool] | None = None) -> list[str] | None:
    u = user(*agents, consents=consents)
    chosen = fallback_tip(fresh_snippets(eligible_agents(u, MANIFESTS), MANIFESTS, now_ms=NOW))
    return None if chosen is None else chosen[1]


def test_shortest_ttl_wins() -> None:
    assert choose(agent("recent-patterns"), agent("overdue-task"), agent("momentum")) == [
        "overdue-task"
    ]


def test_equal_ttl_prefers_the_most_recently_computed_then_the_id() -> None:
    older = agent("momentum", computed_at=NOW - 5000)
    newer = agent("moods", computed_at=NOW - 1000)
    assert choose(older, newer, consents={"mood": True}) == ["moods"]

    tie_a = agent("momentum", computed_at=NOW - 1000)
    tie_b = agent("moods", computed_at=NOW - 1000)
    assert choose(tie_b, tie_a) == ["momentum"]


def test_the_choice_does_not_depend_on_input_order() -> None:
    agents = [agent("recent-patterns"), agent("time-of-day"), agent("momentum")]
    choices = {tuple(choose(*perm) or ()) for perm in itertools.permutations(agents)}
    assert choices == {("momentum",)}


def test_fallback_text_is_the_snippet_verbatim_as_advice() -> None:
    u = user(agent("momentum", "6 tasks done today."))
    answer, agents = fallback_tip(fresh_snippets(u.agents.values(), MANIFESTS, now_ms=NOW)) or (
        None,
        None,
    )
    assert answer is not None
    assert (answer.text, answer.kind, agents) == ("6 tasks done today.", "advice", ["momentum"])


def test_expired_snippets_are_never_chosen() -> None:
    expired = agent("overdue-task", expires_at=NOW)  # expiry is exclusive
    fresh = agent("recent-patterns", expires_at=NOW + 1)
    assert choose(expired, fresh) == ["recent-patterns"]
    assert choose(expired) is None


def test_agents_without_snippet_or_unregistered_are_skipped() -> None:
    assert choose(agent("momentum", None), agent("retired-agent")) is None


def test_revoked_consent_hides_the_agent() -> None:
    revoked = {"tasks": False}
    assert choose(agent("overdue-task"), agent("momentum"), consents=revoked) is None
    assert eligible_agents(user(agent("momentum"), consents=revoked), MANIFESTS) == []


def test_consent_counts_as_granted_until_revoked() -> None:
    assert choose(agent("moods")) == ["moods"]
    assert choose(agent("moods"), consents={"mood": False}) is None
    assert choose(agent("moods"), consents={"mood": True}) == ["moods"]


def test_fresh_snippets_are_in_relevance_order() -> None:
    u = user(agent("recent-patterns"), agent("momentum"), agent("overdue-task"))
    order = [s.agent_id for s in fresh_snippets(u.agents.values(), MANIFESTS, now_ms=NOW)]
    assert order == ["overdue-task", "momentum", "recent-patterns"]
