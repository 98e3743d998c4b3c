"""The stores' history guard (ADR 0009), on both backends.

A write carries where the writer's history of the user starts (`UserWrite.history`: source ->
offset of the user's first message the writer folded there). The store refuses a write whose
history misses part of the stored one's; deletions and removed agents still apply. The
backends and helpers are `tests/integration/test_store.py`'s.
"""

from __future__ import annotations

from pathlib import Path

from connectors.store import SQLiteStore, UserWrite
from tests.integration.test_store import T0, Backend, agent, user
from tests.integration.test_store import backend as backend  # a fixture

S, F = "oo.signals.v1:2", "oo.feedback.v1:2"


def test_a_write_from_a_later_start_is_refused(backend: Backend) -> None:
    s = backend.store
    assert s.write_batch([user("u1", agent(value=1), history={S: 10, F: 4})], now_ms=T0) == []
    # Retention dropped offset 10 of the signals: the restarted flow's history starts at 25.
    refused = s.write_batch(
        [user("u1", agent(et=T0 + 1000, value=2), feedback={"shown": 1}, history={S: 25, F: 4})],
        now_ms=T0,
    )
    assert refused == ["u1"]
    got = s.read_user("u1", now_ms=T0)
    assert got is not None
    assert got.agents["mood"].params["p"]["value"] == 1
    assert got.feedback == {}
    assert got.newest_event_ms == T0
    # The flow did read those events: freshness moves on (the refusal is reported apart).
    fresh = s.user_freshness("u1")
    assert fresh is not None and fresh.reflected_ingest_ms == T0 + 1005


def test_a_stored_source_the_writer_lacks_is_refused(backend: Backend) -> None:
    """All of the user's feedback was dropped: the writer has signals only."""
    s = backend.store
    s.write_batch([user("u1", agent(value=1), history={S: 10, F: 4})], now_ms=T0)
    assert s.write_batch([user("u1", agent(et=T0 + 1, value=2), history={S: 10})]) == ["u1"]
    # Other topics entirely (offsets are not comparable across topic-partitions): refused too.
    other = {"t2.oo.signals.v1:0": 0, "t2.oo.feedback.v1:0": 0}
    assert s.write_batch([user("u1", agent(et=T0 + 1, value=3), history=other)]) == ["u1"]
    got = s.read_user("u1", now_ms=T0)
    assert got is not None and got.agents["mood"].params["p"]["value"] == 1


def test_a_write_covering_the_stored_history_is_accepted(backend: Backend) -> None:
    s = backend.store
    s.write_batch([user("u1", agent(value=1), history={S: 10})], now_ms=T0)
    # Same start, a new source (the user's first feedback), an earlier start: all cover it.
    assert s.write_batch([user("u1", agent(et=T0 + 1, value=2), history={S: 10})]) == []
    assert s.write_batch([user("u1", agent(et=T0 + 2, value=3), history={S: 10, F: 7})]) == []
    assert s.write_batch([user("u1", agent(et=T0 + 3, value=4), history={S: 3, F: 7})]) == []
    # The stored marker is now the last accepted one: the feedback source counts from here on.
    assert s.write_batch([user("u1", agent(et=T0 + 4, value=5), history={S: 3})]) == ["u1"]
    got = s.read_user("u1", now_ms=T0)
    assert got is not None and got.agents["mood"].params["p"]["value"] == 4


def test_writes_without_a_marker_are_not_checked(backend: Backend) -> None:
    """Files (backfill) carry no marker: checked by event time only, the stored marker stays."""
    s = backend.store
    assert s.write_batch([user("u1", agent(value=1))]) == []  # no stored marker yet
    assert s.write_batch([user("u1", agent(et=T0 + 1, value=2), history={S: 10})]) == []
    assert s.write_batch([user("u1", agent(et=T0 + 2, value=3))]) == []
    assert s.write_batch([user("u1", agent(et=T0 + 3, value=4), history={S: 11})]) == ["u1"]
    got = s.read_user("u1", now_ms=T0)
    assert got is not None and got.agents["mood"].params["p"]["value"] == 3


def test_a_refused_write_still_deletes_and_removes(backend: Backend) -> None:
    """Privacy first: a deletion or a revoked consent seen in a fragment is real."""
    s = backend.store
    s.write_batch(
        [user("u1", agent("mood"), agent("tasks"), history={S: 10}), user("u2", history={S: 1})],
        now_ms=T0,
    )
    removal = user("u1", agent("tasks", et=T0 + 5), history={S: 30})
    removal.removed_agents = {"mood"}
    deletion = UserWrite(user_id="u2", deleted_at_ms=T0 + 9, history={S: 40})
    assert sorted(s.write_batch([removal, deletion], now_ms=T0)) == ["u1"]
    got = s.read_user("u1", now_ms=T0)
    assert got is not None
    assert set(got.agents) == {"tasks"}
    assert got.agents["tasks"].event_time_ms == T0
    assert s.read_user("u2") is None and s.tombstone("u2") == T0 + 9


def test_sqlite_file_from_before_the_marker_gets_the_column(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE oo_meta (user_id TEXT PRIMARY KEY, consents TEXT, newest_event_ms INTEGER,"
        " newest_ingest_ms INTEGER, created_ms INTEGER NOT NULL) WITHOUT ROWID"
    )
    conn.execute("INSERT INTO oo_meta VALUES ('u1', NULL, 1, 1, 1)")
    conn.commit()
    conn.close()
    s = SQLiteStore(path)
    try:
        assert s.write_batch([user("u1", agent(), history={S: 3})], now_ms=T0) == []
        assert s.write_batch([user("u1", agent(et=T0 + 1), history={S: 4})], now_ms=T0) == ["u1"]
    finally:
        s.close()
