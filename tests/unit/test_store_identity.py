"""Readiness's view of the store's identity marker (ADR 0008), on an embedded SQLite store."""

from __future__ import annotations

from pathlib import Path

from connectors.store import SQLiteStore
from connectors.tombstones import parse, record
from serving.metrics import Metrics
from serving.store_identity import StoreIdentityWatch


def gauge(metrics: Metrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(name)


def test_first_contact_initialises_a_lost_marker_is_reported_a_refill_is_adopted(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "f.db")
    metrics = Metrics()
    watch = StoreIdentityWatch(metrics)

    assert watch.check(store) == "ok"  # a store nobody initialised: the API does
    first = store.identity()
    assert first is not None and watch.known == first.id

    store._conn.execute("DELETE FROM oo_store")  # the store lost its data
    assert watch.check(store).startswith("lost its data")
    assert gauge(metrics, "oo_store_lost_data") == 1
    assert store.identity() is None  # the API never re-creates a marker it saw go

    refilled = store.create_identity(state="filling")
    assert watch.check(store).startswith("refilling")
    assert (gauge(metrics, "oo_store_lost_data"), gauge(metrics, "oo_store_refilling")) == (0, 1)

    store.set_identity_state(refilled.id, "ready")
    assert watch.check(store) == "ok"
    assert watch.known == refilled.id != first.id
    assert (gauge(metrics, "oo_store_lost_data"), gauge(metrics, "oo_store_refilling")) == (0, 0)
    store.close()


def test_tombstone_records_round_trip_and_garbage_is_skipped() -> None:
    assert parse(*record("u-1", 1_750_000_000_000)) == ("u-1", 1_750_000_000_000)
    assert parse(b"u-1", b"not json") is None
    assert parse(None, b'{"deleted_at_ms": 1}') is None
