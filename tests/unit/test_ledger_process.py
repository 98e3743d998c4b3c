"""What the ledger's own process (ADR 0053) is sent is what the worker would have recorded:
an entry sent as plain values encodes, byte for byte, as the entry itself."""

from __future__ import annotations

import os
import pickle
import time

import pytest

from connectors.store.base import dumps_compact
from connectors.store.ledger import LedgerAgent, LedgerEntry
from serving.ledger_process import (
    CHILD_NICENESS,
    LedgerProcess,
    LedgerStoreConfig,
    entry_of,
    tip_message,
)

PARAMS = {"p": {"value": 0.25, "source": "inferred"}, "q": {"value": "ünï", "source": "default"}}


def _entry(*, fallback: str | None, params_json: bool) -> LedgerEntry:
    text = dumps_compact(PARAMS) if params_json else None
    return LedgerEntry(
        tip_id="t-1",
        user_id="u-1",
        shown_at_ms=1_700_000_000_123,
        text='Walk "now" — ünïcode.',
        kind="todo" if fallback is None else "advice",
        agents=[
            LedgerAgent("overdue-task", "1.2.0", PARAMS, "2 tasks are overdue.", text),
            LedgerAgent("momentum", "1.0.0", {}, None, "{}" if params_json else None),
        ],
        fallback_reason=fallback,
        prompt_version=None if fallback else "v4-orchestrator",
        model=None if fallback else "tip-generator",
        orchestrator_latency_ms=None if fallback else 12.345,
        extra={"note": 1} if fallback else {},
    )


@pytest.mark.parametrize("fallback", [None, "timeout"])
@pytest.mark.parametrize("params_json", [True, False])
def test_an_entry_sent_to_the_ledger_process_encodes_as_itself(
    fallback: str | None, params_json: bool
) -> None:
    entry = _entry(fallback=fallback, params_json=params_json)
    message = pickle.loads(pickle.dumps([tip_message(entry, 1_700_000_000_999)]))[0]

    got, now_ms = entry_of(message)

    assert now_ms == 1_700_000_000_999
    assert got.encoded() == _entry(fallback=fallback, params_json=params_json).encoded()
    assert got.header() == entry.header()


def test_the_ledger_process_runs_at_a_lower_cpu_priority_than_the_api() -> None:
    """Its bursts of recording wait for a core rather than take one from a request."""
    config = LedgerStoreConfig(
        store_url="redis://127.0.0.1:1/0",  # never opened: the trip sent holds no line
        key_prefix="oo-test",
        timeout_s=0.2,
        ledger_url=None,
        retention_ms=1_000,
    )
    process = LedgerProcess(config, on_failed=lambda _: None, on_batch=lambda *_: None)
    process.send([])
    pid = process._process.pid
    expected = min(19, os.getpriority(os.PRIO_PROCESS, 0) + CHILD_NICENESS)
    deadline = time.monotonic() + 30
    try:
        while os.getpriority(os.PRIO_PROCESS, pid) != expected and time.monotonic() < deadline:
            time.sleep(0.02)
        assert os.getpriority(os.PRIO_PROCESS, pid) == expected
    finally:
        process.stop(time.monotonic() + 10)
