"""Which agents a user may be served, which snippets are fresh, and the deterministic fallback tip.

Eligibility: an agent is served when it is in the registry and every consent it
requires is granted (a consent counts as granted until the user's stored
consents say False). Freshness: a snippet is used only while
`now < expires_at`; the store already hides expired snippets, and this module
checks again so a clock skew or a lagging expiry can never serve a stale one.

Relevance (the order of snippets in the prompt, and the fallback's choice):
shortest manifest TTL first (the most time-sensitive agent, e.g. an overdue
task before a 24-hour pattern), then the most recent `computed_at`, then the
agent id. It is a total order, so the fallback is deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from connectors.store.base import StoredAgent, StoredUser
from features.model import Manifest
from serving.orchestrator import Answer, TipKind

FALLBACK_KIND: TipKind = "advice"


@dataclass(frozen=True, slots=True)
class FreshSnippet:
    agent_id: str
    text: str
    expires_at_ms: int | None
    ttl_seconds: int
    computed_at_ms: int


def consent_granted(manifest: Manifest, consents: Mapping[str, bool]) -> bool:
    return all(consents.get(consent, True) for consent in manifest.required_consents)


def eligible_agents(
    user: StoredUser, manifests: Mapping[str, Manifest], *, include_shadow: bool = False
) -> list[StoredAgent]:
    """The user's stored agents that are registered and consented to, by agent id.

    Shadow versions (`Manifest.shadows`) only with `include_shadow`: they are never part of a
    prompt or a tip.
    """
    return [
        agent
        for agent_id, agent in sorted(user.agents.items())
        if agent_id in manifests
        and (include_shadow or manifests[agent_id].shadows is None)
        and consent_granted(manifests[agent_id], user.consents)
    ]


def is_fresh(agent: StoredAgent, *, now_ms: int) -> bool:
    if not agent.snippet:
        return False
    return agent.snippet_expires_at_ms is None or now_ms < agent.snippet_expires_at_ms


def relevance_key(snippet: FreshSnippet) -> tuple[int, int, str]:
    return (snippet.ttl_seconds, -snippet.computed_at_ms, snippet.agent_id)


def fresh_snippets(
    agents: Iterable[StoredAgent], manifests: Mapping[str, Manifest], *, now_ms: int
) -> list[FreshSnippet]:
    """The unexpired snippets of `agents`, most relevant first; never a shadow's."""
    found = [
        FreshSnippet(
            agent_id=agent.agent_id,
            text=agent.snippet or "",
            expires_at_ms=agent.snippet_expires_at_ms,
            ttl_seconds=manifests[agent.agent_id].ttl_seconds,
            computed_at_ms=agent.computed_at_ms,
        )
        for agent in agents
        if agent.agent_id in manifests
        and manifests[agent.agent_id].shadows is None
        and is_fresh(agent, now_ms=now_ms)
    ]
    return sorted(found, key=relevance_key)


def fallback_tip(snippets: list[FreshSnippet]) -> tuple[Answer, list[str]] | None:
    """The most relevant snippet, verbatim, as the tip and its agent; None without any snippet.

    >>> a = FreshSnippet("recent-patterns", "Mornings suit you.", None, 86400, 5)
    >>> b = FreshSnippet("overdue-task", "2 tasks are overdue.", None, 1800, 1)
    >>> fallback_tip([a, b])
    (Answer(text='2 tasks are overdue.', kind='advice'), ['overdue-task'])
    """
    if not snippets:
        return None
    best = min(snippets, key=relevance_key)
    return Answer(text=best.text, kind=FALLBACK_KIND), [best.agent_id]
