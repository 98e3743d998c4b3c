"""Recording served tips and their reactions in the tip ledger (`connectors.store.ledger`).

`tip_entry` builds what a tip was built from out of what the recommend route used: for each
contributing agent its stored version and parameters and the snippet text exactly as it went
into the prompt (or, for a fallback, as the tip). `record_tip` and `record_reaction` run
after the answer is sent, in `serving.after`'s ledger worker: a store that is away loses
the ledger line (logged and counted in `oo_ledger_failed_total`), never the tip. A tip
recorded after the user's deletion is refused by the store itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

from connectors.exceptions import StoreError
from connectors.store.base import FeatureStore, StoredUser, dumps_compact
from connectors.store.ledger import LedgerAgent, LedgerEntry
from serving.ledger_process import wire
from serving.orchestrator import Answer
from serving.tips import FreshSnippet

log = logging.getLogger(__name__)

OnFailed = Callable[[str], None]
"""Told of each line the ledger lost (`tip` or `reaction`): `oo_ledger_failed_total{what}`."""


def tip_entry(
    *,
    tip_id: str,
    user: StoredUser,
    shown_at_ms: int,
    answer: Answer,
    agent_ids: Sequence[str],
    snippets: Sequence[FreshSnippet],
    fallback_reason: str | None,
    prompt_version: str | None,
    model: str | None,
    orchestrator_latency_ms: float | None,
) -> LedgerEntry:
    """The ledger entry of one served tip (contributing agents in the order given)."""
    texts: Mapping[str, str] = {s.agent_id: s.text for s in snippets}
    agents = []
    for agent_id in agent_ids:
        stored = user.agents[agent_id]
        agents.append(
            LedgerAgent(
                agent_id=agent_id,
                version=stored.version,
                params=stored.params,
                snippet=texts.get(agent_id),
                params_json=stored.params_json,
            )
        )
    return LedgerEntry(
        tip_id=tip_id,
        user_id=user.user_id,
        shown_at_ms=shown_at_ms,
        text=answer.text,
        kind=answer.kind,
        agents=agents,
        fallback_reason=fallback_reason,
        prompt_version=prompt_version,
        model=model,
        orchestrator_latency_ms=(
            None if orchestrator_latency_ms is None else round(orchestrator_latency_ms, 3)
        ),
    )


def tip_wire(
    *,
    tip_id: str,
    user: StoredUser,
    shown_at_ms: int,
    answer: Answer,
    agent_ids: Sequence[str],
    snippets: Sequence[FreshSnippet],
    fallback_reason: str | None,
    prompt_version: str | None,
    model: str | None,
    orchestrator_latency_ms: float | None,
    now_ms: int,
) -> bytes:
    """`tip_entry`'s entry as the ledger's process is sent it (`ledger_process.tip_message`,
    pickled: `wire`), built straight from the request's objects without the entry: a few
    microseconds in the route, after which nothing of the request is kept (ADR 0058)."""
    texts: Mapping[str, str] = {s.agent_id: s.text for s in snippets}
    agents = []
    for agent_id in agent_ids:
        stored = user.agents[agent_id]
        params = stored.params_json
        agents.append(
            (
                agent_id,
                stored.version,
                params if params is not None else dumps_compact(stored.params),
                texts.get(agent_id),
            )
        )
    return wire(
        (
            "tip",
            now_ms,
            tip_id,
            user.user_id,
            shown_at_ms,
            answer.text,
            answer.kind,
            tuple(agents),
            fallback_reason,
            prompt_version,
            model,
            None if orchestrator_latency_ms is None else round(orchestrator_latency_ms, 3),
            {},
        )
    )


def record_tip(
    store: FeatureStore,
    entry: LedgerEntry,
    *,
    retention_ms: int,
    now_ms: int,
    on_failed: OnFailed,
) -> None:
    """Record `entry` (blocking: `serving.after`'s ledger worker calls it); a failure is
    logged and counted, never raised."""
    try:
        store.record_tip(entry, retention_ms=retention_ms, now_ms=now_ms)
    except StoreError as exc:
        on_failed("tip")
        log.warning("tip %s of user %s not in the ledger: %s", entry.tip_id, entry.user_id, exc)


def record_tips(
    store: FeatureStore,
    entries: Sequence[tuple[LedgerEntry, int]],
    *,
    retention_ms: int,
    on_failed: OnFailed,
) -> None:
    """`record_tip` of each (entry, now_ms), in one round trip where the store can
    (`record_tips`: Redis), else one by one; each failure is logged and counted."""
    many = getattr(store, "record_tips", None)
    if many is None or len(entries) == 1:
        for entry, now_ms in entries:
            record_tip(store, entry, retention_ms=retention_ms, now_ms=now_ms, on_failed=on_failed)
        return
    try:
        results = many(entries, retention_ms=retention_ms)
    except StoreError as exc:
        results = [exc] * len(entries)
    for (entry, _), result in zip(entries, results, strict=True):
        if isinstance(result, StoreError):
            on_failed("tip")
            log.warning(
                "tip %s of user %s not in the ledger: %s", entry.tip_id, entry.user_id, result
            )


def record_reaction(
    store: FeatureStore,
    *,
    user_id: str,
    tip_id: str,
    reaction: str,
    reaction_id: str,
    at_ms: int,
    on_failed: OnFailed,
) -> None:
    """Join a reaction to its tip in the ledger (blocking, as `record_tip`); a failure is
    logged and counted."""
    try:
        store.record_reaction(
            user_id, tip_id, reaction=reaction, reaction_id=reaction_id, at_ms=at_ms
        )
    except StoreError as exc:
        on_failed("reaction")
        log.warning("reaction to tip %s of user %s not in the ledger: %s", tip_id, user_id, exc)
