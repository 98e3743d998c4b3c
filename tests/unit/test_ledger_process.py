"""What the ledger's own process (ADR 0053) is sent is what the worker would have recorded:
an entry sent as plain values encodes, byte for byte, as the entry itself; the route's tip,
pickled in the request (ADR 0058), is that same message, and the queue waiting for its trip
holds nothing of the request."""

from __future__ import annotations

import os
import pickle
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, cast

import pytest

from connectors.store.base import StoredAgent, StoredUser, dumps_compact
from connectors.store.ledger import LedgerAgent, LedgerEntry
from serving import ledger
from serving.after import AfterResponse
from serving.ledger_process import (
    CHILD_NICENESS,
    LedgerProcess,
    LedgerStoreConfig,
    entry_of,
    items_of,
    tip_message,
    wire,
)
from serving.metrics import Metrics
from serving.orchestrator import Answer
from serving.tips import FreshSnippet

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


def _user(params_json: bool) -> StoredUser:
    def agent(agent_id: str, snippet: str | None) -> StoredAgent:
        return StoredAgent(
            agent_id=agent_id,
            version="1.2.0",
            params=PARAMS,
            extras={},
            event_time_ms=1,
            ingest_time_ms=2,
            computed_at_ms=3,
            snippet=snippet,
            snippet_expires_at_ms=None,
            params_json=dumps_compact(PARAMS) if params_json else None,
        )

    return StoredUser(
        user_id="u-1",
        agents={
            "overdue-task": agent("overdue-task", "2 tasks."),
            "momentum": agent("momentum", ""),
        },
        feedback={},
        consents={},
        newest_event_ms=None,
        newest_ingest_ms=None,
    )


def _tip_parts(user: StoredUser, fallback: str | None) -> dict[str, Any]:
    return {
        "tip_id": "t-1",
        "user": user,
        "shown_at_ms": 1_700_000_000_123,
        "answer": Answer('Walk "now" — ünïcode.', "todo"),
        "agent_ids": ["momentum", "overdue-task"],
        "snippets": [FreshSnippet("overdue-task", "2 tasks are overdue.", None, 60, 3)],
        "fallback_reason": fallback,
        "prompt_version": None if fallback else "v4-orchestrator",
        "model": None if fallback else "tip-generator",
        "orchestrator_latency_ms": None if fallback else 12.34567,
    }


@pytest.mark.parametrize("fallback", [None, "timeout"])
@pytest.mark.parametrize("params_json", [True, False])
def test_the_routes_pickled_tip_is_the_message_of_its_entry(
    fallback: str | None, params_json: bool
) -> None:
    parts = _tip_parts(_user(params_json), fallback)
    entry = ledger.tip_entry(**parts)

    got = ledger.tip_wire(**parts, now_ms=9)

    assert pickle.loads(got) == tip_message(entry, 9)
    assert entry_of(pickle.loads(got))[0].encoded() == entry.encoded()


def test_a_trips_message_is_its_items_in_order() -> None:
    items = [tip_message(_entry(fallback=None, params_json=True), 1), ("reaction", "u", "t", "x")]
    items += [tip_message(_entry(fallback="timeout", params_json=False), 2)]
    assert items_of(b"".join(wire(item) for item in items)) == items
    assert items_of(b"") == []


class _Forwarded(LedgerProcess):
    """A ledger process that keeps the messages it is sent."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.sent = threading.Event()

    def send(self, items: Sequence[bytes]) -> None:
        self.messages.append(b"".join(items))
        self.sent.set()

    def stop(self, deadline: float) -> None:
        pass


def test_a_tip_queued_for_the_ledger_process_keeps_nothing_of_the_request() -> None:
    """The route's tip waits for its trip (0.25 s) as bytes: the user read, its snippets and
    the answer are freed with the request, so the collector never meets them in its older
    generations (ADR 0058); a closure over them kept ~50 requests' objects alive at 200/s."""
    process = _Forwarded()
    after = AfterResponse(
        sink=cast(Any, None),
        store=cast(Any, None),
        metrics=Metrics(),
        ledger_retention_ms=10**9,
        ledger_linger_s=1.0,  # the trip waits: what is queued is what a request left behind
        ledger_process=process,
    )
    parts = _tip_parts(_user(True), None)
    held = {name: sys.getrefcount(parts[name]) for name in ("user", "answer", "snippets")}

    after.record_served_tip(**parts, now_ms=9)
    after.record_reaction(user_id="u-1", tip_id="t-1", reaction="like", reaction_id="r", at_ms=9)

    assert {name: sys.getrefcount(parts[name]) for name in held} == held
    after.stop(timeout_s=5)  # the queued trip is forwarded at stop, in order, as one message
    [message] = process.messages
    assert items_of(message) == [
        tip_message(ledger.tip_entry(**parts), 9),
        ("reaction", "u-1", "t-1", "like", "r", 9),
    ]
