"""The store contract on the embedded SQLite backend alone: no Redis, no Kafka.

The cases are those of `tests/integration/test_store.py` (which runs them on both
backends); here `backend` is SQLite only, so `pytest -m "not integration"` covers the store.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_store import (  # noqa: F401  (collected here, on SQLite)
    Backend,
    _open,
    test_agent_without_snippet_drops_the_old_one,
    test_agent_write_round_trip,
    test_batch_of_1000_users_is_one_round_trip,
    test_closed_sqlite_store_raises_store_error,
    test_delete_user_removes_every_key_and_guards_later_writes,
    test_deletion_inside_a_batch,
    test_feedback_and_consents_round_trip,
    test_older_write_is_ignored_newer_replaces,
    test_open_store_rejects_unknown_urls,
    test_ping,
    test_removed_agents,
    test_rewrite_refreshes_ttl,
    test_snippet_ttl_is_enforced_on_read,
    test_sqlite_store_is_shared_between_connections,
    test_unknown_user_reads_none,
    test_user_ids,
)


@pytest.fixture
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    with _open("sqlite", request, tmp_path, "oo") as b:
        yield b
