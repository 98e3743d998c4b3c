"""The streaming feature flow: events in, per-user features out.

    read_events (decode, key by user) -> fold_user_state -> split_fold_failures -+-> store
                                                                                 +-> deadletter

A record the source rejected is keyed by "" (no user id is empty) and `fold_user_state`
passes it on as it is; so do the events whose fold raised, and `split_fold_failures` sends
both to the dead letters (Kafka topic or rejects file): one step a write, none an event
(ADR 0049).

Thin by design: decoding and writing live in `connectors`, the per-user state in
`features`, and the fold-to-write step in `flows.folding`; this module only wires them into a
Bytewax dataflow.
"""

from __future__ import annotations

import io
import pickle
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, cast

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSinkMessage
from bytewax.dataflow import Dataflow, Stream
from bytewax.operators import KeyedStream, StatefulBatchLogic

from connectors import bytewax_io, tombstones, topics
from connectors.batching import KAFKA_BATCH_SIZE
from connectors.jsonl import rejects_path_for
from connectors.kafka_source import KafkaEventSource
from connectors.records import Accepted, Rejected
from connectors.store.base import UserWrite
from features.state import UserState
from flows.coalescing import CATCHUP_FLUSH_INTERVAL_S, FLUSH_INTERVAL_S, flush_delay_s
from flows.folding import (
    HELD_REBASE_EVENTS,
    HistoryStart,
    Pending,
    Written,
    accepted_again,
    build_write,
    hold_origin,
)

_PENDING, _SETTLED = b"P", b"S"
"""First byte of a snapshot: the user has folded changes not written yet (due at once after a
resume), or not. The rest is `pickle.dumps((UserState, Pending))`. A snapshot without it (an
older flow's) starts with pickle's own b"\\x80" and is loaded at once."""


class UserLogic(StatefulBatchLogic[Accepted | Rejected, UserWrite | Rejected, bytes]):
    """One user's `UserState`: folds every batch, writes at most once per flush interval.

    With `flush_interval` 0 each batch is written at once; otherwise the first
    change schedules a write `flush_interval` later and everything folded until
    then goes out in that one write. What is folded but not yet written is part
    of the snapshot, so a restart loses nothing.

    `dedupe` lets writes leave out agents whose output equals the one last handed to the
    store (`written`, this writer's own bookkeeping: never snapshotted, so a resumed user
    starts with none); the flow turns it off when an earlier incarnation has written the
    store (ADR 0007).

    A resumed user (`UserLogic.resumed`) keeps its snapshot's bytes and unpickles them only
    when it is first needed (an event, a due write): Bytewax builds every snapshotted user at
    start, and unpickling them all made the first write after a resume wait for every user
    (BENCHMARKS.md, "Resume"). Until then its snapshot is those bytes, unchanged.
    """

    def __init__(
        self,
        state: UserState | None,
        pending: Pending | None,
        flush_interval: timedelta,
        catchup_interval: timedelta | None = None,
        snapshots: bool = True,
        dedupe: bool = True,
    ) -> None:
        self.state = state
        self.snapshots = snapshots
        self.written: Written | None = {} if dedupe else None
        """What this process last handed the store per agent (None: no dedupe)."""
        self.pending = _holding(pending or Pending(history=HistoryStart()))
        self.flush_interval = flush_interval
        self.catchup_interval = catchup_interval or flush_interval
        self.due: datetime | None = None
        self.wrote = False
        """Whether this process has written this user (not snapshotted: per process)."""
        self.frozen: bytes | None = None
        """The snapshot this user was resumed from, while it is not unpickled yet."""
        if self.pending.seen_ingest_ms is not None:
            self.due = datetime.now(UTC)

    @classmethod
    def resumed(
        cls,
        snapshot: bytes,
        flush_interval: timedelta,
        catchup_interval: timedelta | None = None,
        snapshots: bool = True,
        dedupe: bool = True,
    ) -> UserLogic:
        """A user resumed from `snapshot` (what `snapshot()` returned in an earlier run)."""
        if snapshot[:1] not in (_PENDING, _SETTLED):
            state, pending = _thaw(snapshot)
            return cls(state, pending, flush_interval, catchup_interval, snapshots, dedupe)
        logic = cls(None, None, flush_interval, catchup_interval, snapshots, dedupe)
        logic.frozen = snapshot
        if snapshot[:1] == _PENDING:
            logic.due = datetime.now(UTC)  # what the crashed run had not written yet
        return logic

    def _thaw(self) -> None:
        if self.frozen is not None:
            self.state, pending = _thaw(self.frozen[1:])
            self.pending = _holding(pending)
            self.frozen = None

    def on_batch(
        self, records: list[Accepted | Rejected]
    ) -> tuple[list[UserWrite | Rejected], bool]:
        if records[0].__class__ is Rejected:
            # The sources' rejects, all keyed by "" (never a user's id): on to the dead
            # letters as they are, and nothing is kept for that key (ADR 0049).
            return records, StatefulBatchLogic.DISCARD  # type: ignore[return-value]
        # A user's key: its accepted events only (no `cast`: a call and an alias a batch).
        values: list[Accepted] = records  # type: ignore[assignment]
        if self.frozen is not None:
            self._thaw()
        if self.state is None:
            self.state = UserState(values[0].event.user_id)
        self.pending.fold(self.state, values)
        if self.pending.failed:  # events whose fold raised: to the dead letters (ADR 0011)
            failed: list[UserWrite | Rejected] = list(self.pending.take_failed())
            if not self.flush_interval:
                failed.extend(self._flush())
            return failed, StatefulBatchLogic.RETAIN
        if not self.flush_interval:
            return self._flush(), StatefulBatchLogic.RETAIN  # type: ignore[return-value]
        if self.due is None and self.pending.seen_ingest_ms is not None:
            now = datetime.now(UTC)
            flush_s = self.flush_interval.total_seconds()
            if self.wrote:
                behind_s = now.timestamp() - max(v.ingest_ms for v in values) / 1000
                delay = flush_delay_s(
                    behind_s, flush_s=flush_s, catchup_max_s=self.catchup_interval.total_seconds()
                )
            else:
                # This user's first write in this process is not held by the catch-up
                # coalescing: after a restart the store learns at once that the flow is back,
                # and events that waited out the downtime are not a backlog of their own.
                delay = flush_s
            self.due = now + timedelta(seconds=delay)
        return [], StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return self.due

    def on_notify(self) -> tuple[list[UserWrite], bool]:
        return self._flush(), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[UserWrite], bool]:
        return self._flush(), StatefulBatchLogic.RETAIN

    def _flush(self) -> list[UserWrite]:
        self.due = None
        self.wrote = True
        if self.frozen is not None and self.frozen[:1] == _SETTLED:
            return []  # nothing folded since the snapshot, nothing pending in it
        self._thaw()
        if self.state is None or self.pending.seen_ingest_ms is None:
            return []
        write = build_write(self.state, self.pending, written=self.written)
        self.pending = self.pending.successor()  # keeps the history marker (ADR 0009)
        return [] if write is None else [write]

    def snapshot(self) -> bytes:
        if self.frozen is not None:
            return self.frozen  # unchanged since the resume
        if not self.snapshots:
            # No recovery store: Bytewax still asks every touched user at each epoch and
            # drops the answer, so do not pickle the state for nothing.
            return b""
        # pickle, not deepcopy: several times cheaper per touched user at each epoch.
        mark = _SETTLED if self.pending.seen_ingest_ms is None else _PENDING
        pickled = pickle.dumps((self.state, self.pending), protocol=pickle.HIGHEST_PROTOCOL)
        if self.state is not None:
            # The snapshot is also the fold's rebuild base (ADR 0011): no pickle of its own.
            self.pending.rebase(pickled)
        return mark + pickled


def _holding(pending: Pending) -> Pending:
    """`pending`, holding each event folded since its rebuild base as its ingest time and
    origin rather than as the decoded event, `HELD_REBASE_EVENTS` of them at most (ADR 0045;
    a resumed `Pending` comes without)."""
    pending.hold, pending.unhold = hold_origin, accepted_again
    pending.rebase_events = HELD_REBASE_EVENTS
    return pending


_MOVED = {"connectors.folding": "flows.folding"}
"""Modules whose classes snapshots of an older flow name (ADR 0017): where they are now."""


class _OlderSnapshot(pickle.Unpickler):
    """Unpickles a snapshot of a flow from before ADR 0017: `Pending` and `HistoryStart` were
    `connectors.folding`'s."""

    def find_class(self, module: str, name: str) -> Any:
        return super().find_class(_MOVED.get(module, module), name)


def _thaw(data: bytes) -> tuple[UserState | None, Pending]:
    try:
        state, pending = pickle.loads(data)
    except ModuleNotFoundError:
        # Only snapshots of an older flow name a module that moved: the slower loader, once.
        state, pending = _OlderSnapshot(io.BytesIO(data)).load()
        if state is not None:
            # They kept the write digests on the state; they described what the crashed
            # incarnation handed its store, and a resumed writer starts with none anyway.
            vars(state).pop("output_digests", None)
    return state, pending


def _build_logic(
    flush_interval: timedelta,
    catchup_interval: timedelta,
    snapshots: bool,
    dedupe: bool,
    resume: bytes | None,
) -> UserLogic:
    if not resume:
        return UserLogic(None, None, flush_interval, catchup_interval, snapshots, dedupe)
    return UserLogic.resumed(resume, flush_interval, catchup_interval, snapshots, dedupe)


def _tombstone_message(
    item: tuple[str, UserWrite], *, topic_prefix: str
) -> KafkaSinkMessage[bytes, bytes] | None:
    write = item[1]
    if write.deleted_at_ms is None:
        return None
    key, value = tombstones.record(write.user_id, write.deleted_at_ms)
    return KafkaSinkMessage(key=key, value=value, topic=tombstones.topic_name(topic_prefix))


def _record(item: tuple[str, Any]) -> Any:
    return item[1]


def _is_write(item: tuple[str, UserWrite | Rejected]) -> bool:
    return item[1].__class__ is not Rejected


def build_flow(
    *,
    store_url: str,
    key_prefix: str = "oo",
    kafka_bootstrap: str | None = None,
    topic_prefix: str = "",
    event_log: str | Path | None = None,
    rejects_path: str | Path | None = None,
    stop_at_end: bool = False,
    batch_size: int = KAFKA_BATCH_SIZE,
    flush_interval: timedelta = timedelta(seconds=FLUSH_INTERVAL_S),
    catchup_interval: timedelta = timedelta(seconds=CATCHUP_FLUSH_INTERVAL_S),
    freshness: bool = True,
    recovery: bool = True,
    dedupe_writes: bool = False,
    dead_letters: bool = True,
    ledger_store_url: str | None = None,
) -> Dataflow:
    """The feature dataflow, reading Kafka (`kafka_bootstrap`) or an event-log file (`event_log`).

    `recovery=False` says the flow runs without a recovery store, so user states need no
    snapshots (Bytewax asks for them at every epoch all the same).

    `dedupe_writes=True` skips writing an agent whose output did not change since this flow
    last wrote it. Only sound when this flow is the store's only writer so far
    (`flows.folding.dedupe_is_safe`, checked by `oo-features flow` at start); otherwise
    every changed agent is written and the store's event-time guard decides (ADR 0007).

    `ledger_store_url`: the tip ledger's own Redis (ADR 0052), where the store sink applies
    the flow's deletions and consent revocations too.

    `dead_letters=False` drops rejected records (a refill replays what the running flow
    already dead-lettered).
    With Kafka, every deletion the flow writes is also published to the compacted tombstone
    topic (`connectors.tombstones`, ADR 0008), so a deletion that reached the flow as an event
    is durable like one made through the API.
    """
    if (kafka_bootstrap is None) == (event_log is None):
        raise ValueError("build_flow needs exactly one of kafka_bootstrap or event_log")
    flow = Dataflow("oo_features")
    if kafka_bootstrap is not None:
        # Decoded and keyed inside the source: no per-message wrapper, no decode or key step.
        source = KafkaEventSource(
            kafka_bootstrap,
            topics.event_topics(topic_prefix),
            tail=not stop_at_end,
            batch_size=batch_size,
        )
        records = op.input("read_events", flow, source)
    else:
        assert event_log is not None
        raw_lines = op.input("read_events", flow, bytewax_io.EventLogSource(event_log))
        records = op.flat_map_batch("decode", raw_lines, bytewax_io.decode_line_batch)
    # The sources emit accepted events as (user_id, Accepted) and rejected records as
    # ("", Rejected): already a keyed stream, whose "" key the fold passes on (ADR 0049).
    keyed = cast(KeyedStream[Accepted | Rejected], records)
    if event_log is not None:
        # An event log is a replay: everything in it is a backlog, written at the latest at
        # the end of the file, so coalesce as when catching up.
        flush_interval = max(flush_interval, catchup_interval)
    folded = op.stateful_batch(
        "fold_user_state",
        keyed,
        partial(_build_logic, flush_interval, catchup_interval, recovery, dedupe_writes),
    )
    # Still keyed by user: the store sink takes `(user_id, UserWrite)` as the fold emits them,
    # so a write crosses no step that only drops its key or puts it back (ADR 0037).
    outputs = op.branch("split_fold_failures", folded, _is_write)
    # The records that did not decode or validate and the events whose fold raised.
    rejected = cast(Stream[Rejected], op.map("unkey_rejects", outputs.falses, _record))
    if not dead_letters:
        pass  # `rejected` leads nowhere: dropped
    elif kafka_bootstrap is not None:
        op.output(
            "deadletter",
            rejected,
            bytewax_io.dead_letter_sink(kafka_bootstrap, topic_prefix=topic_prefix),
        )
    else:
        path = rejects_path_for(str(event_log), rejects_path)
        op.output("deadletter", rejected, bytewax_io.RejectsFileSink(path))
    user_writes = cast(KeyedStream[UserWrite], outputs.trues)
    op.output(
        "store",
        user_writes,
        bytewax_io.StoreSink(
            store_url, key_prefix=key_prefix, freshness=freshness, ledger_url=ledger_store_url
        ),
    )
    if kafka_bootstrap is not None:
        deletions = op.filter_map(
            "to_tombstones", user_writes, partial(_tombstone_message, topic_prefix=topic_prefix)
        )
        op.output("tombstones", deletions, tombstones.sink(kafka_bootstrap))
    return flow


__all__ = ["Rejected", "UserLogic", "build_flow"]
