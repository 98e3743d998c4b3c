"""The tip ledger: what each served tip was built from, and the reactions it got.

One entry per tip (orchestrator or fallback), kept next to the user's features in the same
store so that it shares their fate:

- **Deletion**: every ledger key/row of a user goes in the same step as their features (the
  user's deletion, from the API or from a `UserDeleted` in the flow). A tip recorded after
  the deletion (a late background write) is refused by the tombstone.
- **Consent revocation**: when the flow removes an agent (its consent was revoked), the
  values that agent contributed (parameters, snippet text, and a fallback tip's text, which
  is that snippet verbatim) are removed from every entry of the user; the agent's id and
  version stay, marked `"removed": "consent"`.
- **Retention**: entries older than the retention are never exported and are deleted
  (Redis: trimmed when the user's next tip is recorded, and the whole ledger expires one
  retention after the user's last tip; SQLite: at most once a minute, on a write).

Stored parts: the header (`LedgerEntry` without the agents' values), one value record per
contributing agent (`{"params", "snippet"[, "tip_text"]}`), and the reactions. `render`
joins them into the exported line (see `export_line`). Pure: no I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

DAY_MS = 86_400_000
REMOVED_BY_CONSENT = "consent"


@dataclass(slots=True)
class LedgerAgent:
    """One contributing agent as the tip used it."""

    agent_id: str
    version: str
    params: dict[str, dict[str, Any]]
    snippet: str | None
    params_json: str | None = field(default=None, compare=False, repr=False)
    """`params` as the feature store holds them (`dumps_compact`), when the reader had the
    text: spliced into the stored values instead of encoding `params` again (ADR 0046)."""


@dataclass(slots=True)
class LedgerEntry:
    """One served tip and what it was built from."""

    tip_id: str
    user_id: str
    shown_at_ms: int
    text: str
    kind: str
    agents: list[LedgerAgent]
    """The contributing agents, in prompt order (a fallback tip: its one agent)."""
    fallback_reason: str | None
    prompt_version: str | None
    """The prompt template sent to the orchestrator; None when none was asked."""
    model: str | None
    orchestrator_latency_ms: float | None
    extra: dict[str, Any] = field(default_factory=dict)
    _encoded: tuple[str, list[tuple[str, str]]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def header(self) -> dict[str, Any]:
        """The stored header: everything but the agents' values (and a fallback's text)."""
        fallback = self.fallback_reason is not None
        return {
            "tip_id": self.tip_id,
            "user_id": self.user_id,
            "shown_at_ms": self.shown_at_ms,
            "text": None if fallback else self.text,
            "kind": self.kind,
            "fallback": fallback,
            "fallback_reason": self.fallback_reason,
            "prompt_version": self.prompt_version,
            "model": self.model,
            "orchestrator_latency_ms": self.orchestrator_latency_ms,
            "agents": [{"agent_id": a.agent_id, "version": a.version} for a in self.agents],
            **self.extra,
        }

    def values(self) -> dict[str, dict[str, Any]]:
        """agent id -> the values it contributed; a fallback's text rides with its agent."""
        out: dict[str, dict[str, Any]] = {}
        for i, a in enumerate(self.agents):
            values: dict[str, Any] = {"params": a.params, "snippet": a.snippet}
            if self.fallback_reason is not None and i == 0:
                values["tip_text"] = self.text
            out[a.agent_id] = values
        return out

    def encoded(self) -> tuple[str, list[tuple[str, str]]]:
        """The stored JSON of `header()` and of each agent's `values()` (agent id, JSON), as
        `dumps_compact` writes them; worked out once per entry (the ledger worker encodes
        entries as it builds them, in short pieces: ADR 0046). An agent's stored `params`
        text is spliced as it is (it is `dumps_compact` of the same parameters)."""
        if self._encoded is None:
            from connectors.store.base import dumps_compact  # base imports this module

            values: list[tuple[str, str]] = []
            fallback_text = self.fallback_reason is not None
            for a in self.agents:
                params = a.params_json if a.params_json is not None else dumps_compact(a.params)
                tail = ""
                if fallback_text:
                    tail = ',"tip_text":' + dumps_compact(self.text)
                    fallback_text = False
                values.append(
                    (
                        a.agent_id,
                        f'{{"params":{params},"snippet":{dumps_compact(a.snippet)}{tail}}}',
                    )
                )
            self._encoded = (dumps_compact(self.header()), values)
        return self._encoded


def iso_ms(ms: int) -> str:
    """RFC 3339 UTC with milliseconds.

    >>> iso_ms(0)
    '1970-01-01T00:00:00.000Z'
    """
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def render(
    header: Mapping[str, Any],
    values: Mapping[str, Mapping[str, Any]],
    reactions: Iterable[Mapping[str, Any]],
) -> dict[str, Any]:
    """The exported line of one tip: the header, each agent with its values (or marked
    removed), the tip text, and the reactions in time order.

    >>> h = {"tip_id": "t", "user_id": "u", "shown_at_ms": 0, "text": None, "kind": "advice",
    ...      "fallback": True, "agents": [{"agent_id": "a", "version": "1"}]}
    >>> line = render(h, {}, [])
    >>> line["text"], line["agents"]
    (None, [{'agent_id': 'a', 'version': '1', 'params': None, 'snippet': None, 'removed': 'consent'}])
    """
    line = dict(header)
    line["shown_at"] = iso_ms(int(header["shown_at_ms"]))
    agents = []
    for ref in header.get("agents", []):
        got = values.get(ref["agent_id"])
        if got is None:
            agents.append({**ref, "params": None, "snippet": None, "removed": REMOVED_BY_CONSENT})
            continue
        agents.append({**ref, "params": got.get("params"), "snippet": got.get("snippet")})
        if line.get("text") is None and "tip_text" in got:
            line["text"] = got["tip_text"]
    line["agents"] = agents
    line["reactions"] = sorted(
        ({**r, "at": iso_ms(int(r["at_ms"]))} for r in reactions),
        key=lambda r: (r["at_ms"], r.get("reaction_id", "")),
    )
    return line


def cutoff_ms(now_ms: int, retention_ms: int) -> int:
    """The oldest `shown_at_ms` still kept."""
    return now_ms - retention_ms


class TipLedger(Protocol):
    """The ledger side of a store (`RedisStore`, `SQLiteStore`)."""

    def record_tip(self, entry: LedgerEntry, *, retention_ms: int, now_ms: int) -> bool:
        """Record a served tip; False (nothing written) when the user is unknown or was
        deleted at or after `entry.shown_at_ms`. One round trip."""

    def record_reaction(
        self, user_id: str, tip_id: str, *, reaction: str, reaction_id: str, at_ms: int
    ) -> bool:
        """Join a reaction to the user's tip; False when the ledger has no such tip."""

    def ledger_export(
        self, *, since_ms: int | None, now_ms: int, retention_ms: int
    ) -> Iterator[dict[str, Any]]:
        """Every kept tip shown at or after `since_ms` as `render` lines: user by user, in
        time order within a user."""
