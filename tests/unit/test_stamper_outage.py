"""The ingestion stamper keeps what the store refused and stamps it with the next batch.

Without that, users whose events arrived while the store was away never became pending, so the
freshness report said they were fresh during the outage (ADR 0010).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from connectors.exceptions import StoreError
from connectors.freshness import IngestStamper
from connectors.store import SQLiteStore, open_store
from tests.unit.test_freshness import FakeMessage


class RefusingStore:
    """The embedded store behind a switch: while `away`, stamping fails like Redis would."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.away = True

    def stamp_ingest(self, newest: Mapping[str, int], *, oldest: Any = None) -> None:
        if self.away:
            raise StoreError("Redis at 127.0.0.1:6379 timed out (stamp_ingest)")
        self.store.stamp_ingest(newest, oldest=oldest)


class FakeConsumer:
    def __init__(self, batches: list[list[FakeMessage]]) -> None:
        self.batches = batches

    def consume(self, n: int, timeout: float) -> list[FakeMessage]:
        return self.batches.pop(0) if self.batches else []

    def commit(self, asynchronous: bool) -> None:
        pass


@pytest.fixture
def store() -> Iterator[SQLiteStore]:
    opened = open_store("sqlite:///:memory:")
    assert isinstance(opened, SQLiteStore)
    yield opened
    opened.close()


def test_stamps_refused_during_an_outage_are_stamped_once_the_store_is_back(
    store: SQLiteStore,
) -> None:
    refusing = RefusingStore(store)
    stamper = IngestStamper(refusing, bootstrap="127.0.0.1:1")  # type: ignore[arg-type]
    consumer = FakeConsumer(
        [[FakeMessage(b"a", 1_000), FakeMessage(b"a", 3_000)], [FakeMessage(b"b", 2_000)]]
    )
    stamper._step(consumer)  # the store is away: refused, kept
    stamper._step(consumer)  # still away: kept with b's
    assert stamper.status.last_error is not None
    refusing.away = False
    stamper._step(consumer)  # no new message: what was kept goes now
    a, b = store.user_freshness("a"), store.user_freshness("b")
    assert a is not None and b is not None
    assert (a.newest_ingest_ms, a.pending_since_ms) == (3_000, 1_000)
    assert (b.newest_ingest_ms, b.pending_since_ms) == (2_000, 2_000)
    assert stamper.status.last_error is None
