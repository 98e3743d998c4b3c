"""What an answer leaves to be done once it is sent: the API's events (`TipShown`,
`TipReaction`) and the tip ledger's records, each kind done in order by a thread of its own.

Why not the framework's background tasks: a blocking task there is a hop into the shared
thread pool through anyio, about 0.15-0.2 ms of CPU each on this project's machine, two per
tip (BENCHMARKS.md, "Serving CPU", ADR 0027). Here a route only queues the work (a few
microseconds) and returns; one worker thread per kind takes it from its queue:

- **events**: `emit(build)` builds the event in the worker (`build()`) and hands it to the
  app's `EventSink` (`emit`, which logs and counts its own failures in
  `oo_events_failed_total`); `emit_event(event)` for an event the answer already names.
- **ledger**: `record_tip` / `record_reaction` run `serving.ledger`'s recorders (a store
  that is away loses the line, never the tip: logged and counted in
  `oo_ledger_failed_total`). Tips and reactions share one queue, so a reaction is never
  recorded before the tip it joins. With a `LedgerProcess` (the app's own Redis store, ADR
  0053) the worker only forwards each trip to that process, which records it; the route then
  queues its tip already pickled (`record_served_tip`, ADR 0058), holding nothing of the
  request.

The kinds do not wait for each other: a store outage never delays the events, nor a Kafka
outage the ledger. Failure behaviour: nothing here raises into a route or blocks it. A queue
holding `capacity` items drops new work, counted like a failure of that work (the
`events_failed` or `ledger_failed` counter). `stop` lets each worker finish what is queued
within its bound; what is left then is counted as failed. Ledger records no longer go through
the store guard: each is bounded by the store client's own timeouts, in a thread no request
waits for.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from connectors.sinks import EventSink
from connectors.store.base import FeatureStore, StoredUser
from connectors.store.ledger import LedgerEntry
from proto import events_pb2 as pb
from serving import ledger
from serving.ledger_process import LedgerProcess, tip_message, wire
from serving.metrics import Metrics
from serving.orchestrator import Answer
from serving.tips import FreshSnippet

__all__ = ["DEFAULT_CAPACITY", "AfterResponse"]

log = logging.getLogger(__name__)

DEFAULT_CAPACITY = 10_000
"""Items a worker's queue holds (50 s of tips at 200/s) before new work is dropped."""

Job = Callable[[], None]


class _Worker:
    """One thread that runs queued jobs in order; `on_dropped(what)` for work it never ran."""

    def __init__(self, name: str, *, capacity: int, on_dropped: Callable[[str], None]) -> None:
        self._queue: queue.SimpleQueue[tuple[str, Job] | None] = queue.SimpleQueue()
        self._capacity = capacity
        self._on_dropped = on_dropped
        self._thread = threading.Thread(target=self._run, name=f"oo-after-{name}", daemon=True)
        self._thread.start()

    def put(self, what: str, job: Job) -> None:
        if self._queue.qsize() >= self._capacity:
            self._on_dropped(what)
            return
        self._queue.put((what, job))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            what, job = item
            try:
                job()
            except Exception:  # a job handles its expected failures; anything else is logged
                log.exception("after-answer work (%s) failed", what)
                self._on_dropped(what)

    def stop(self, deadline: float) -> None:
        self._queue.put(None)
        self._thread.join(max(0.0, deadline - time.monotonic()))
        while True:  # what the worker did not get to in time
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                self._on_dropped(item[0])


LEDGER_LINGER_S = 0.25
"""How long the ledger worker lets tips gather after the first before it records them, so
that the tips of a busy moment go to the store in one round trip (`record_tips`): at 200
tips/s about fifty a trip, each one call of the same script, recorded that much later.
On Redis with `appendfsync always` every round trip costs one AOF fsync (~2.3 ms on this
project's machine) that every other client waits behind, so round trips a second, not only
tips, are what the ledger costs the feature reads: 0.25 s and one transaction a trip
(`RedisStore.record_tips`) make it ~4 fsyncs a second instead of ~30 (ADR 0041). It is also
the longest a tip waits in this process's memory before it is sent: what an API process that
dies hard loses (plus what its queue held)."""
LEDGER_BATCH = 200
"""Tips recorded in one round trip, at most."""
LEDGER_YIELD_EVERY = 4
"""Tips the ledger worker builds and encodes before it lets go of the GIL (`time.sleep(0)`):
a batch of ~50 tips is ~2-8 ms of Python, and a thread that never blocks keeps the GIL until
the interpreter's switch interval (5 ms) takes it away, however long the event loop has been
waiting for it (ADR 0046). A piece of 4 tips is well under a millisecond."""


@dataclass(frozen=True, slots=True)
class _TipRecord:
    """A tip for the ledger: its entry's builder and the request's `now_ms`."""

    build: Callable[[], LedgerEntry]
    now_ms: int


class _LedgerWorker(_Worker):
    """The ledger's worker: as `_Worker`, except that the tips queued one after another are
    recorded together (`serving.ledger.record_tips`) after `linger_s`; reactions and other
    jobs keep their place in the order."""

    def __init__(
        self,
        name: str,
        *,
        capacity: int,
        on_dropped: Callable[[str], None],
        record: Callable[[list[tuple[LedgerEntry, int]]], None],
        linger_s: float,
        on_batch: Callable[[float, int], None] | None = None,
        encode: bool = True,
        forward: Callable[[list[bytes]], None] | None = None,
    ) -> None:
        self._record = record
        self._forward = forward
        self._linger_s = linger_s
        self._on_batch = on_batch
        self._encode = encode
        super().__init__(name, capacity=capacity, on_dropped=on_dropped)

    def put_tip(self, tip: _TipRecord) -> None:
        if self._queue.qsize() >= self._capacity:
            self._on_dropped("tip")
            return
        self._queue.put(("tip", tip))  # type: ignore[arg-type]  # run by _run_batch only

    def put_wire(self, what: str, item: bytes) -> None:
        """Queue an item already on the wire (`ledger_process.wire`): forwarded as it is."""
        if self._queue.qsize() >= self._capacity:
            self._on_dropped(what)
            return
        self._queue.put((what, item))  # type: ignore[arg-type]  # run by _run_batch only

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            if self._linger_s > 0 and self._queue.qsize() < LEDGER_BATCH:
                # Not woken by each tip that arrives meanwhile; not at all behind a full
                # batch, so the worker keeps up with LEDGER_BATCH tips per round trip.
                time.sleep(self._linger_s)
            batch = [first]
            stop = False
            while len(batch) < LEDGER_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            cpu = time.thread_time()
            self._run_batch(batch)
            if self._on_batch is not None:
                tips = sum(1 for _, job in batch if isinstance(job, _TipRecord))
                self._on_batch(time.thread_time() - cpu, tips)
            if stop:
                return

    def _run_batch(self, batch: list[tuple[str, Job]]) -> None:
        tips: list[tuple[LedgerEntry, int]] = []
        wired: list[tuple[str, bytes]] = []
        built = 0
        for what, job in batch:
            if isinstance(job, bytes):  # already on the wire (put_wire): forwarded in order
                self._flush(tips)
                tips = []
                wired.append((what, job))
                continue
            self._send(wired)
            wired = []
            if isinstance(job, _TipRecord):
                built += 1
                if built % LEDGER_YIELD_EVERY == 0:
                    time.sleep(0)  # let the event loop in between short pieces (see above)
                try:
                    entry = job.build()
                    if self._encode:
                        entry.encoded()  # what the store sends, worked out here in short pieces
                    tips.append((entry, job.now_ms))
                except Exception:
                    log.exception("after-answer work (%s) failed", what)
                    self._on_dropped(what)
                continue
            self._flush(tips)
            tips = []
            try:
                job()
            except Exception:
                log.exception("after-answer work (%s) failed", what)
                self._on_dropped(what)
        self._flush(tips)
        self._send(wired)

    def _send(self, wired: list[tuple[str, bytes]]) -> None:
        if not wired:
            return
        try:
            assert self._forward is not None, "put_wire without a ledger process"
            self._forward([item for _, item in wired])
        except Exception:
            log.exception("after-answer work (ledger trip) failed")
            for what, _ in wired:
                self._on_dropped(what)

    def _flush(self, tips: list[tuple[LedgerEntry, int]]) -> None:
        if not tips:
            return
        try:
            self._record(tips)
        except Exception:
            log.exception("after-answer work (tip) failed")
            for _ in tips:
                self._on_dropped("tip")


class AfterResponse:
    """The app's after-answer work (see the module docstring); made and stopped by the app's
    lifespan, used by the routes through `serving.api.deps.AfterDep`."""

    def __init__(
        self,
        *,
        sink: EventSink,
        store: FeatureStore,
        metrics: Metrics,
        ledger_retention_ms: int,
        capacity: int = DEFAULT_CAPACITY,
        ledger_linger_s: float = LEDGER_LINGER_S,
        ledger_process: LedgerProcess | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"expected capacity >= 1; got {capacity}")
        self._sink = sink
        self._store = store
        self._metrics = metrics
        self.ledger_retention_ms = ledger_retention_ms
        self._events = _Worker("events", capacity=capacity, on_dropped=metrics.count_failed_event)
        self._ledger_process = ledger_process
        record: Callable[[list[tuple[LedgerEntry, int]]], None]
        if ledger_process is None:

            def record(tips: list[tuple[LedgerEntry, int]]) -> None:
                ledger.record_tips(
                    store, tips, retention_ms=ledger_retention_ms, on_failed=self._ledger_failed
                )

        else:
            # Forwarded to the ledger's own process (ADR 0053): it encodes and records, and
            # reports its CPU and losses back (`LedgerProcess`).
            def record(tips: list[tuple[LedgerEntry, int]]) -> None:
                ledger_process.send([wire(tip_message(entry, now_ms)) for entry, now_ms in tips])

        self._ledger = _LedgerWorker(
            "ledger",
            capacity=capacity,
            on_dropped=self._ledger_failed,
            record=record,
            linger_s=ledger_linger_s,
            on_batch=self._count_ledger_work if ledger_process is None else None,
            encode=ledger_process is None,
            forward=None if ledger_process is None else ledger_process.send,
        )

    def _ledger_failed(self, what: str) -> None:
        self._metrics.ledger_failed.labels(what).inc()

    def _count_ledger_work(self, cpu_s: float, tips: int) -> None:
        self._metrics.ledger_worker_cpu.observe(cpu_s)
        self._metrics.ledger_worker_tips.inc(tips)

    @property
    def ledger_on(self) -> bool:
        """Whether tips are recorded (`OO_LEDGER_RETENTION_DAYS` > 0)."""
        return self.ledger_retention_ms > 0

    def emit(self, kind: str, build: Callable[[], pb.Event]) -> None:
        """Publish the event `build()` makes (`kind`: its payload, for the failure counter)."""
        sink = self._sink
        self._events.put(kind, lambda: sink.emit(build()))

    def emit_event(self, event: pb.Event) -> None:
        """Publish an event already built (its id is in the answer)."""
        sink = self._sink
        self._events.put(event.WhichOneof("payload") or "unknown", lambda: sink.emit(event))

    def record_tip(self, build: Callable[[], LedgerEntry], *, now_ms: int) -> None:
        """Record the ledger entry `build()` makes (nothing while the ledger is off)."""
        if not self.ledger_on:
            return
        self._ledger.put_tip(_TipRecord(build, now_ms))

    def record_served_tip(
        self,
        *,
        tip_id: str,
        user: StoredUser,
        shown_at_ms: int,
        answer: Answer,
        agent_ids: list[str],
        snippets: list[FreshSnippet],
        fallback_reason: str | None,
        prompt_version: str | None,
        model: str | None,
        orchestrator_latency_ms: float | None,
        now_ms: int,
    ) -> None:
        """Record the tip the recommend route served (`serving.ledger.tip_entry`'s arguments;
        nothing while the ledger is off). For the ledger's process it is pickled here, in the
        request, so the queue holds none of the request's objects until its trip (ADR 0058);
        the in-process worker builds the entry itself, as `record_tip`."""
        if not self.ledger_on:
            return
        served: dict[str, Any] = {
            "tip_id": tip_id,
            "user": user,
            "shown_at_ms": shown_at_ms,
            "answer": answer,
            "agent_ids": agent_ids,
            "snippets": snippets,
            "fallback_reason": fallback_reason,
            "prompt_version": prompt_version,
            "model": model,
            "orchestrator_latency_ms": orchestrator_latency_ms,
        }
        if self._ledger_process is not None:
            self._ledger.put_wire("tip", ledger.tip_wire(**served, now_ms=now_ms))
            return
        build = functools.partial(ledger.tip_entry, **served)
        self._ledger.put_tip(_TipRecord(build, now_ms))

    def record_reaction(
        self, *, user_id: str, tip_id: str, reaction: str, reaction_id: str, at_ms: int
    ) -> None:
        """Join a reaction to its tip in the ledger (nothing while the ledger is off)."""
        if not self.ledger_on:
            return
        if self._ledger_process is not None:
            message = ("reaction", user_id, tip_id, reaction, reaction_id, at_ms)
            self._ledger.put_wire("reaction", wire(message))
            return
        store = self._store
        self._ledger.put(
            "reaction",
            lambda: ledger.record_reaction(
                store,
                user_id=user_id,
                tip_id=tip_id,
                reaction=reaction,
                reaction_id=reaction_id,
                at_ms=at_ms,
                on_failed=self._ledger_failed,
            ),
        )

    def stop(self, *, timeout_s: float) -> None:
        """Finish what is queued within `timeout_s` in all, then stop both workers."""
        deadline = time.monotonic() + timeout_s
        self._events.stop(deadline)
        self._ledger.stop(deadline)
        if self._ledger_process is not None:
            self._ledger_process.stop(deadline)
