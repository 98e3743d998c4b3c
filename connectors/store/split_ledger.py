"""A feature store whose tip ledger lives on a Redis server of its own (ADR 0052).

`open_store(url, ledger_url=...)` (`OO_LEDGER_STORE_URL`) answers a `SplitLedgerStore`:
features, freshness, identity and tombstones stay in the feature store; tips and reactions are
recorded in, and exported from, the ledger store. Why: with `appendfsync always` (ADR 0010)
every write on a Redis server makes that server's only thread fsync before it answers anyone,
so the ledger's records would hold up the feature reads of every request (ADR 0046, 0052).

Privacy crosses the two stores:

- **Deletion** (`delete_user`, or a write carrying `deleted_at_ms`): the feature store first,
  then the ledger store, where the user's entries go and a tombstone stays, so that a tip
  recorded later (a background write racing the deletion) is refused there too.
- **Consent revocation** (a write with `removed_agents`): the agents' values leave the user's
  ledger entries, after the feature store took the write.

Failure behaviour: either step may raise `StoreError`; the caller retries the whole call, and
both steps are idempotent (the flow's writer retries batches, the API answers 503 and the
deletion is also applied by the flow from its `UserDeleted` event). Until the second step
succeeds the ledger may still hold entries of a user whose features are gone; it never holds
entries recorded after the deletion.

What stays in the feature store's hands: refills (`restore_tombstones`), backfills (they
rebuild features from a log; the deletions in it reached the ledger when the API or the flow
applied them) and the store's identity. The ledger cannot be recomputed from the log, so a
wiped ledger store stays empty.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

from connectors.exceptions import StoreError
from connectors.store.base import (
    IDENTITY_READY,
    FreshnessSummary,
    StoredUser,
    StoredUserBytes,
    StoredUserJSON,
    StoreIdentity,
    UserFreshness,
    UserWrite,
)
from connectors.store.ledger import LedgerEntry
from connectors.store.redis_store import RedisStore

__all__ = ["SplitLedgerStore"]


class SplitLedgerStore:
    """`FeatureStore` over `features` with the tip ledger in `ledger` (a `RedisStore` made
    with `ledger_only=True`). Closing it closes both. Safe to share between threads."""

    def __init__(self, features: RedisStore, ledger: RedisStore) -> None:
        self.features = features
        self.ledger = ledger

    # -- the ledger's side ----------------------------------------------------------------------

    def record_tip(self, entry: LedgerEntry, *, retention_ms: int, now_ms: int) -> bool:
        [done] = self.record_tips([(entry, now_ms)], retention_ms=retention_ms)
        if isinstance(done, StoreError):
            raise done
        return done

    def record_tips(
        self, entries: Sequence[tuple[LedgerEntry, int]], *, retention_ms: int
    ) -> list[bool | StoreError]:
        """As `RedisStore.record_tips`: a tip of a user without features in the feature
        store answers False (asked there with reads, which cost it no fsync); a deleted
        user's tip is refused by the ledger store's tombstone."""
        known = self.features.users_known({e.user_id for e, _ in entries}) if entries else set()
        sent = [(e, n) for e, n in entries if e.user_id in known]
        got = iter(self.ledger.record_tips(sent, retention_ms=retention_ms))
        return [next(got) if e.user_id in known else False for e, _ in entries]

    def record_reaction(
        self, user_id: str, tip_id: str, *, reaction: str, reaction_id: str, at_ms: int
    ) -> bool:
        return self.ledger.record_reaction(
            user_id, tip_id, reaction=reaction, reaction_id=reaction_id, at_ms=at_ms
        )

    def ledger_export(
        self, *, since_ms: int | None, now_ms: int, retention_ms: int
    ) -> Iterator[dict[str, Any]]:
        return self.ledger.ledger_export(
            since_ms=since_ms, now_ms=now_ms, retention_ms=retention_ms
        )

    # -- writes and deletion: both stores -------------------------------------------------------

    def write_batch(self, writes: list[UserWrite], *, now_ms: int | None = None) -> list[str]:
        refused = self.features.write_batch(writes, now_ms=now_ms)
        deleted = {w.user_id: w.deleted_at_ms for w in writes if w.deleted_at_ms is not None}
        removed = {w.user_id: w.removed_agents for w in writes if w.removed_agents}
        self.ledger.forget_in_ledger(deleted=deleted, removed=removed)
        return refused

    def delete_user(self, user_id: str, *, deleted_at_ms: int) -> None:
        self.features.delete_user(user_id, deleted_at_ms=deleted_at_ms)
        self.ledger.forget_in_ledger(deleted={user_id: deleted_at_ms}, removed={})

    def ping(self) -> None:
        """The feature store's: what serving and the flow's start need. The ledger's outage
        is the ledger's: its records are logged and counted as failed (`serving.after`), and
        the flow's writer retries a batch with a deletion or a revocation until it is back."""
        self.features.ping()

    def close(self) -> None:
        try:
            self.features.close()
        finally:
            self.ledger.close()

    # -- the feature store's alone --------------------------------------------------------------

    def read_user(self, user_id: str, *, now_ms: int | None = None) -> StoredUser | None:
        return self.features.read_user(user_id, now_ms=now_ms)

    def read_users(
        self, user_ids: Sequence[str], *, now_ms: int | None = None
    ) -> dict[str, StoredUser | None]:
        return self.features.read_users(user_ids, now_ms=now_ms)

    def read_users_json(
        self, user_ids: Sequence[str], *, now_ms: int | None = None
    ) -> dict[str, StoredUserJSON | None]:
        return self.features.read_users_json(user_ids, now_ms=now_ms)

    def read_users_bytes(
        self,
        user_ids: Sequence[str],
        *,
        now_ms: int | None = None,
        agents: Collection[str] | None = None,
    ) -> dict[str, StoredUserBytes | None]:
        return self.features.read_users_bytes(user_ids, now_ms=now_ms, agents=agents)

    def tombstone(self, user_id: str) -> int | None:
        return self.features.tombstone(user_id)

    def user_ids(self) -> list[str]:
        return self.features.user_ids()

    def stamp_ingest(
        self, newest: Mapping[str, int], *, oldest: Mapping[str, int] | None = None
    ) -> None:
        self.features.stamp_ingest(newest, oldest=oldest)

    def freshness_summary(
        self, *, now_ms: int, window_ms: int, sla_ms_by_agent: Mapping[str, int], worst_n: int = 10
    ) -> FreshnessSummary:
        return self.features.freshness_summary(
            now_ms=now_ms, window_ms=window_ms, sla_ms_by_agent=sla_ms_by_agent, worst_n=worst_n
        )

    def user_freshness(self, user_id: str) -> UserFreshness | None:
        return self.features.user_freshness(user_id)

    def identity(self) -> StoreIdentity | None:
        return self.features.identity()

    def create_identity(self, *, state: str = IDENTITY_READY) -> StoreIdentity:
        return self.features.create_identity(state=state)

    def set_identity_state(self, identity_id: str, state: str) -> bool:
        return self.features.set_identity_state(identity_id, state)

    def restore_tombstones(self, tombstones: Mapping[str, int]) -> int:
        return self.features.restore_tombstones(tombstones)
