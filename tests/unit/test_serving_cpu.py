"""What the recommend path's CPU cuts (ADR 0027) must keep: the answer written without its
model is the model's answer; the after-answer work runs in order, off the request, and what it
cannot do is counted; an orchestrator call imports nothing per request."""

from __future__ import annotations

import asyncio
import importlib.abc
import json
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import httpx
import pytest

from connectors.exceptions import StoreError
from connectors.store.ledger import LedgerEntry
from proto import events_pb2 as pb
from serving import events
from serving.after import AfterResponse
from serving.api.models import RecommendOut, TipOut
from serving.api.routes.recommend import answer_json
from serving.metrics import Metrics
from serving.orchestrator import Answer, CircuitBreaker, OrchestratorClient
from tests.orchestrator_peer import OrchestratorPeer


@pytest.mark.parametrize(
    ("tip", "agents", "fallback_reason", "reason"),
    [
        (Answer('Walk "now" — ünïcode.', "todo"), ["momentum", "overdue-task"], None, None),
        (Answer("2 tasks are overdue.", "advice"), ["overdue-task"], "timeout", None),
        (None, [], None, "no_fresh_snippets"),
    ],
)
def test_the_recommend_answer_is_what_its_model_writes(
    tip: Answer | None, agents: list[str], fallback_reason: str | None, reason: str | None
) -> None:
    model = RecommendOut(
        tip=None if tip is None else TipOut(tip_id="t-1", text=tip.text, kind=tip.kind),
        agents=agents,
        fallback=fallback_reason is not None,
        fallback_reason=fallback_reason,
        reason=reason,
    )
    got = answer_json(tip, "t-1", agents, fallback_reason=fallback_reason, reason=reason)
    assert json.loads(bytes(got.body)) == json.loads(model.model_dump_json())
    assert got.media_type == "application/json"


class _Sink:
    kind = "file"

    def __init__(self) -> None:
        self.events: list[pb.Event] = []
        self.threads: set[str] = set()

    def emit(self, event: pb.Event) -> None:
        self.threads.add(threading.current_thread().name)
        self.events.append(event)


class _Store:
    """Records the ledger calls in order; `fail` makes them raise as a store that is away."""

    def __init__(self, *, fail: bool = False, hold: threading.Event | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.fail = fail
        self.hold = hold
        self.entered = threading.Event()

    def record_tip(self, entry: LedgerEntry, *, retention_ms: int, now_ms: int) -> bool:
        self.entered.set()
        if self.hold is not None:
            self.hold.wait(30)
        if self.fail:
            raise StoreError("Redis at nowhere is unreachable (record_tip)")
        self.calls.append(("tip", entry.tip_id))
        return True

    def record_reaction(
        self, user_id: str, tip_id: str, *, reaction: str, reaction_id: str, at_ms: int
    ) -> bool:
        if self.fail:
            raise StoreError("Redis at nowhere is unreachable (record_reaction)")
        self.calls.append(("reaction", tip_id))
        return True


def _entry(tip_id: str) -> LedgerEntry:
    return LedgerEntry(tip_id, "u-1", 5, "Go.", "advice", [], None, None, None, None)


def _failed(metrics: Metrics, name: str, label: str) -> float:
    return (
        metrics.registry.get_sample_value(name, {"what" if "ledger" in name else "kind": label})
        or 0.0
    )


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


def _wait(condition: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_after_answer_work_runs_in_order_off_the_caller(metrics: Metrics) -> None:
    sink, store = _Sink(), _Store()
    after = AfterResponse(
        sink=sink, store=cast(Any, store), metrics=metrics, ledger_retention_ms=10**9
    )
    for i in range(50):
        after.emit("tip_shown", lambda i=i: events.tip_shown("u-1", f"t{i}", ["a"], shown_at_ms=7))
        after.record_tip(lambda i=i: _entry(f"t{i}"), now_ms=9)
        after.record_reaction(
            user_id="u-1", tip_id=f"t{i}", reaction="like", reaction_id="r", at_ms=9
        )
    after.stop(timeout_s=5)

    assert [e.tip_shown.tip_id for e in sink.events] == [f"t{i}" for i in range(50)]
    assert sink.events[0].occurred_at.ToMilliseconds() == 7  # the answer's time, not later
    assert store.calls == [(kind, f"t{i}") for i in range(50) for kind in ("tip", "reaction")]
    assert sink.threads == {"oo-after-events"}


def test_the_ledger_off_records_nothing(metrics: Metrics) -> None:
    store = _Store()
    after = AfterResponse(
        sink=_Sink(), store=cast(Any, store), metrics=metrics, ledger_retention_ms=0
    )
    after.record_tip(lambda: _entry("t"), now_ms=9)
    after.record_reaction(user_id="u-1", tip_id="t", reaction="like", reaction_id="r", at_ms=9)
    after.stop(timeout_s=5)
    assert store.calls == []


def test_a_store_away_loses_ledger_lines_counted_and_never_delays_the_events(
    metrics: Metrics,
) -> None:
    hold = threading.Event()
    sink, store = _Sink(), _Store(fail=True, hold=hold)
    after = AfterResponse(
        sink=sink, store=cast(Any, store), metrics=metrics, ledger_retention_ms=10**9, capacity=3
    )
    after.record_tip(lambda: _entry("t0"), now_ms=9)
    assert store.entered.wait(30)  # the first is held in the store
    for i in range(6):  # 3 wait in the queue; 2 find it full
        if i:
            after.record_tip(lambda i=i: _entry(f"t{i}"), now_ms=9)
        after.emit("tip_shown", lambda i=i: events.tip_shown("u-1", f"t{i}", ["a"]))
        _wait(lambda i=i: len(sink.events) == i + 1)
    assert len(sink.events) == 6  # the events went out while the ledger's store hung
    assert _failed(metrics, "oo_ledger_failed_total", "tip") == 2  # dropped: queue full
    hold.set()
    after.stop(timeout_s=5)
    assert _failed(metrics, "oo_ledger_failed_total", "tip") == 6  # and 4 failed in the store
    assert store.calls == []


class _BatchStore(_Store):
    """A store with `record_tips` (as Redis has): one call per round trip; tip `t3` fails."""

    def __init__(self) -> None:
        super().__init__()
        self.trips: list[int] = []

    def record_tips(
        self, entries: list[tuple[LedgerEntry, int]], *, retention_ms: int
    ) -> list[bool | StoreError]:
        self.trips.append(len(entries))
        out: list[bool | StoreError] = []
        for entry, _ in entries:
            if entry.tip_id == "t3":
                out.append(StoreError("refused"))
            else:
                self.calls.append(("tip", entry.tip_id))
                out.append(True)
        return out


def test_the_tips_of_a_busy_moment_are_recorded_in_one_round_trip(metrics: Metrics) -> None:
    """ADR 0033: tips queued together go to the store together, in order; a reaction keeps
    its place after its tip; each failed entry is counted on its own."""
    store = _BatchStore()
    after = AfterResponse(
        sink=_Sink(),
        store=cast(Any, store),
        metrics=metrics,
        ledger_retention_ms=10**9,
        ledger_linger_s=1.0,  # all of them queued before the first trip, however slow
    )
    for i in range(10):
        after.record_tip(lambda i=i: _entry(f"t{i}"), now_ms=9)
    after.record_reaction(user_id="u-1", tip_id="t9", reaction="like", reaction_id="r", at_ms=9)
    after.record_tip(lambda: _entry("t10"), now_ms=9)
    after.stop(timeout_s=5)

    expected = [("tip", f"t{i}") for i in range(10) if i != 3]
    assert store.calls == [*expected, ("reaction", "t9"), ("tip", "t10")]
    assert store.trips == [10]  # t10, alone after the reaction, through record_tip
    assert _failed(metrics, "oo_ledger_failed_total", "tip") == 1


def test_the_ledger_worker_counts_its_own_work(metrics: Metrics) -> None:
    """ADR 0040: the worker's CPU per batch and its tips are on /metrics, so a bench can read
    the ledger's own cost off a running API."""
    after = AfterResponse(
        sink=_Sink(),
        store=cast(Any, _BatchStore()),
        metrics=metrics,
        ledger_retention_ms=10**9,
        ledger_linger_s=1.0,
    )
    for i in range(5):
        after.record_tip(lambda i=i: _entry(f"t{i}"), now_ms=9)
    after.stop(timeout_s=5)
    registry = metrics.registry
    assert registry.get_sample_value("oo_ledger_worker_tips_total") == 5
    assert registry.get_sample_value("oo_ledger_worker_batch_cpu_seconds_count") == 1
    assert registry.get_sample_value("oo_ledger_worker_batch_cpu_seconds_sum") is not None


class _ImportWatch(importlib.abc.MetaPathFinder):
    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        self.names.append(name)
        return None


@pytest.fixture
def peer() -> Iterator[OrchestratorPeer]:
    with OrchestratorPeer(answer={"text": "Take a walk.", "kind": "advice"}) as running:
        yield running


def test_an_orchestrator_call_imports_nothing(peer: OrchestratorPeer) -> None:
    """httpcore imports `sniffio` on every request it sends; without the package installed each
    of those imports searched sys.path and failed (about 0.3 ms of CPU per tip)."""

    async def calls() -> list[str]:
        async with httpx.AsyncHTTPTransport() as http:
            client = OrchestratorClient(
                http,
                base_url=peer.url,
                model="tip-generator",
                breaker=CircuitBreaker(failure_threshold=5, cooldown_s=30),
                timeout_s=2.0,
                budget_s=4.0,
            )
            await client.complete("warm-up")
            watch = _ImportWatch()
            sys.meta_path.insert(0, watch)
            try:
                for _ in range(3):
                    assert await client.complete("the prompt") == Answer("Take a walk.", "advice")
            finally:
                sys.meta_path.remove(watch)
            return watch.names

    assert asyncio.run(calls()) == []
