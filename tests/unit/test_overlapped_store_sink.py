"""The flow's store partition writes in a thread of its own (ADR 0026): order, coalescing of
the batches that waited together, the end-of-epoch barrier, backpressure and failures.

A recording writer stands in for `_StorePartition` here (the queue is what is under test); the
real store behind it, killed, stopped and wiped, is in tests/e2e/test_crash_e2e.py,
test_outage_e2e.py and test_store_loss_e2e.py, which run the flow with this sink.
"""

from __future__ import annotations

import threading

import pytest

from connectors.bytewax_io import _OverlappedStorePartition
from connectors.store.base import AgentWrite, UserWrite


class Recorder:
    """Takes batches like `_StorePartition.write_batch`; `gate` holds the writer thread."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.batches: list[list[UserWrite]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_on = fail_on
        self.closed = False

    def write_batch(self, items: list[UserWrite]) -> None:
        self.entered.set()
        self.gate.wait(10)
        self.batches.append(list(items))
        if self.fail_on is not None and len(self.batches) == self.fail_on:
            raise ValueError("a bug in the write path")

    def close(self) -> None:
        self.closed = True


def _write(user: str, event_ms: int) -> UserWrite:
    agent = AgentWrite(
        agent_id="momentum",
        version="1.0.0",
        params={"z": {"value": event_ms, "source": "inferred"}},
        extras={},
        snippet=None,
        ttl_seconds=0,
        event_time_ms=event_ms,
        ingest_time_ms=event_ms,
        computed_at_ms=event_ms,
    )
    return UserWrite(user_id=user, agents={"momentum": agent}, newest_event_ms=event_ms)


def _partition(recorder: Recorder, max_writes: int = 8) -> _OverlappedStorePartition:
    return _OverlappedStorePartition(recorder, max_writes)  # type: ignore[arg-type]


def test_snapshot_returns_only_once_every_batch_handed_over_is_written() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    part = _partition(recorder)
    part.write_batch([_write("u1", 1)])
    assert recorder.entered.wait(5)
    done = threading.Event()
    threading.Thread(target=lambda: (part.snapshot(), done.set()), daemon=True).start()
    assert not done.wait(0.3), "the epoch ended while a write was still on its way"
    recorder.gate.set()
    assert done.wait(5)
    assert [w.user_id for batch in recorder.batches for w in batch] == ["u1"]
    part.close()
    assert recorder.closed


def test_batches_that_waited_together_go_in_one_write_in_their_order() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    part = _partition(recorder)
    part.write_batch([_write("u1", 1)])
    assert recorder.entered.wait(5)  # the writer holds the first batch
    for i in range(2, 6):
        part.write_batch([_write("u1", i), _write(f"u{i}", i)])
    recorder.gate.set()
    part.snapshot()
    assert len(recorder.batches) == 2
    first, rest = recorder.batches
    assert [w.newest_event_ms for w in first] == [1]
    # Order kept: u1's writes 2..5 in the order the flow made them.
    assert [w.newest_event_ms for w in rest if w.user_id == "u1"] == [2, 3, 4, 5]
    part.close()


def test_a_full_queue_blocks_the_worker() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    part = _partition(recorder, max_writes=2)
    part.write_batch([_write("u1", 1)])
    assert recorder.entered.wait(5)
    part.write_batch([_write("u1", 2)])
    part.write_batch([_write("u1", 3)])
    blocked = threading.Event()
    returned = threading.Event()

    def fourth() -> None:
        blocked.set()
        part.write_batch([_write("u1", 4)])
        returned.set()

    threading.Thread(target=fourth, daemon=True).start()
    assert blocked.wait(5)
    assert not returned.wait(0.3), "a third waiting batch was taken beyond the bound"
    recorder.gate.set()
    assert returned.wait(5)
    part.close()
    assert [w.newest_event_ms for b in recorder.batches for w in b] == [1, 2, 3, 4]


def test_the_bound_counts_writes_and_a_larger_batch_is_taken_alone() -> None:
    """ADR 0039: backpressure counts the writes waiting, not the batches; a batch larger than
    the bound waits only for the writer to take what waits before it."""
    recorder = Recorder()
    recorder.gate.clear()
    part = _partition(recorder, max_writes=3)
    part.write_batch([_write("u0", 1)])
    assert recorder.entered.wait(5)  # taken: the writer holds it, nothing waits
    part.write_batch([_write("u1", 1), _write("u2", 1)])  # 2 of 3 wait
    returned = threading.Event()

    def more(batch: list[UserWrite]) -> None:
        part.write_batch(batch)
        returned.set()

    threading.Thread(target=more, args=([_write("u3", 1), _write("u4", 1)],), daemon=True).start()
    assert not returned.wait(0.3), "4 writes waited beyond a bound of 3"
    recorder.gate.set()
    assert returned.wait(5)
    big = [_write(f"b{i}", 1) for i in range(5)]
    part.write_batch(big)  # nothing waits once the writer took the rest: taken alone
    part.snapshot()
    part.close()
    written = [w.user_id for b in recorder.batches for w in b]
    assert sorted(written) == sorted(["u0", "u1", "u2", "u3", "u4", *(w.user_id for w in big)])


def test_a_failure_in_the_writer_stops_the_worker_at_its_next_call() -> None:
    recorder = Recorder(fail_on=1)
    part = _partition(recorder)
    part.write_batch([_write("u1", 1)])
    with pytest.raises(RuntimeError, match="store writer thread failed") as info:
        part.snapshot()
    assert isinstance(info.value.__cause__, ValueError)
    with pytest.raises(RuntimeError):
        part.write_batch([_write("u1", 2)])


def test_close_writes_what_waits_then_closes_the_store() -> None:
    recorder = Recorder()
    part = _partition(recorder)
    for i in range(1, 4):
        part.write_batch([_write("u1", i)])
    part.close()
    assert [w.newest_event_ms for b in recorder.batches for w in b] == [1, 2, 3]
    assert recorder.closed
