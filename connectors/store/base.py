"""The feature store interface: what the flow writes and the API reads.

Two implementations share it: `RedisStore` (production) and `SQLiteStore`
(the embedded default for one machine). Only `connectors` knows key layouts.
Every timestamp is integer epoch milliseconds (UTC).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(slots=True)
class AgentWrite:
    """One agent's new view of one user."""

    agent_id: str
    version: str
    params: dict[str, dict[str, Any]]
    """name -> {"value", "source"[, "inferred_value"]} (`Param.as_dict()`)."""
    extras: dict[str, Any]
    snippet: str | None
    ttl_seconds: int
    event_time_ms: int
    """Occurred-at of the newest event folded in: the write guard (older never replaces newer)."""
    ingest_time_ms: int
    """Kafka timestamp (or read time for files) of the newest event folded in."""
    computed_at_ms: int


@dataclass(slots=True)
class UserWrite:
    """Everything that changed for one user within one batch, coalesced."""

    user_id: str
    agents: dict[str, AgentWrite] = field(default_factory=dict)
    removed_agents: set[str] = field(default_factory=set)
    """Agents whose consent was revoked: their parameters and snippet are deleted."""
    feedback: dict[str, Any] | None = None
    consents: dict[str, bool] | None = None
    deleted_at_ms: int | None = None
    """Set when the user was deleted: every key goes, a tombstone stays."""
    newest_event_ms: int | None = None
    """Occurred-at of the newest event seen for the user (freshness bookkeeping)."""
    newest_ingest_ms: int | None = None


@dataclass(slots=True)
class StoredAgent:
    agent_id: str
    version: str
    params: dict[str, dict[str, Any]]
    extras: dict[str, Any]
    event_time_ms: int
    ingest_time_ms: int
    computed_at_ms: int
    snippet: str | None
    """Only while unexpired; None otherwise."""
    snippet_expires_at_ms: int | None


@dataclass(slots=True)
class StoredUser:
    user_id: str
    agents: dict[str, StoredAgent]
    feedback: dict[str, Any]
    consents: dict[str, bool]
    newest_event_ms: int | None
    newest_ingest_ms: int | None


class FeatureStore(Protocol):
    """The online store. Implementations must be safe to share between processes."""

    def write_batch(self, writes: list[UserWrite], *, now_ms: int | None = None) -> None:
        """Apply every write in one round trip; a write older than the stored one is ignored."""

    def read_user(self, user_id: str, *, now_ms: int | None = None) -> StoredUser | None:
        """The user's stored features; None for an unknown or deleted user."""

    def delete_user(self, user_id: str, *, deleted_at_ms: int) -> None:
        """Remove every key of the user at once and leave a tombstone."""

    def tombstone(self, user_id: str) -> int | None:
        """The deletion time of a deleted user, else None."""

    def user_ids(self) -> list[str]:
        """Every user with stored features (for freshness reporting)."""

    def ping(self) -> None:
        """Raise `StoreError` when the store is unreachable."""

    def close(self) -> None: ...
