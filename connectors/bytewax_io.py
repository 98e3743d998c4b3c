"""Bytewax sources and sinks of the engine: Kafka and event-log files in; the store, dead letters out.

The flow (`flows/`) wires these to `features`; nothing here knows a feature.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from connectors import flow_metrics, topics
from connectors.kafka_source import Keyed
from connectors.records import Accepted, Rejected, decode_line
from connectors.store import open_store
from connectors.store.base import UserWrite

LINES_PER_BATCH = 1000
LINES_READ = [0]
"""Lines read by event-log sources in this process (a progress bar polls it)."""


def is_accepted(item: Keyed) -> bool:
    """`split_rejects`: an accepted event goes on to the fold, a rejected record to the dead letters."""
    return item[1].__class__ is Accepted


class _LinePartition(StatefulSourcePartition[tuple[str, int, str], int]):
    def __init__(self, path: Path, resume_line: int | None) -> None:
        self._path = path
        self._file = path.open("r", encoding="utf-8")
        self._line_no = 0
        for _ in range(resume_line or 0):
            self._file.readline()
            self._line_no += 1

    def next_batch(self) -> list[tuple[str, int, str]]:
        batch = []
        for _ in range(LINES_PER_BATCH):
            line = self._file.readline()
            if not line:
                break
            self._line_no += 1
            batch.append((str(self._path), self._line_no, line))
        if not batch:
            raise StopIteration()
        LINES_READ[0] += len(batch)
        return batch

    def snapshot(self) -> int:
        return self._line_no

    def close(self) -> None:
        self._file.close()


class EventLogSource(FixedPartitionedSource[tuple[str, int, str], int]):
    """An event-log file (canonical JSON, one event per line) as one resumable partition."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"event log {self.path} does not exist")

    def list_parts(self) -> list[str]:
        return [str(self.path)]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _LinePartition:
        return _LinePartition(self.path, resume_state)


def decode_line_batch(items: list[tuple[str, int, str]]) -> list[Keyed]:
    """Event-log lines into keyed records, like the Kafka source emits them."""
    now_s = time.time()
    ingest = int(now_s * 1000)
    out: list[Keyed] = []
    rejected: dict[str, int] = {}
    read: dict[str, int] = {}
    for path, line_no, line in items:
        record = decode_line(path, line_no, line, ingest_ms=ingest, now_s=now_s)
        if record is None:
            continue
        read[path] = read.get(path, 0) + 1
        if record.__class__ is Accepted:
            out.append((record.event.user_id, record))  # type: ignore[union-attr]
        else:
            out.append(("", record))
            rejected[path] = rejected.get(path, 0) + 1
    for path, n in read.items():
        flow_metrics.count_read(path, n, rejected.get(path, 0))
    return out


class _StorePartition(StatelessSinkPartition[UserWrite]):
    def __init__(self, url: str, key_prefix: str, freshness: bool) -> None:
        self._store = open_store(url, key_prefix=key_prefix, freshness=freshness)

    def write_batch(self, items: list[UserWrite]) -> None:
        writes = _coalesce(items)
        refused = self._store.write_batch(writes)
        flow_metrics.observe_writes(writes)
        if refused:
            flow_metrics.count_history_refused(refused)

    def close(self) -> None:
        flow_metrics.report_history_refused(force=True)
        self._store.close()


def _coalesce(items: list[UserWrite]) -> list[UserWrite]:
    """Keep one write per user per batch: a later write of the same user supersedes agent by agent."""
    by_user: dict[str, UserWrite] = {}
    for item in items:
        previous = by_user.get(item.user_id)
        if previous is None or item.deleted_at_ms is not None:
            by_user[item.user_id] = item
            continue
        previous.agents.update(item.agents)
        previous.removed_agents = (
            previous.removed_agents - item.agents.keys()
        ) | item.removed_agents
        for agent_id in item.removed_agents:
            previous.agents.pop(agent_id, None)
        previous.feedback = item.feedback or previous.feedback
        previous.consents = item.consents or previous.consents
        previous.newest_event_ms = item.newest_event_ms
        previous.newest_ingest_ms = item.newest_ingest_ms
        previous.history = item.history or previous.history
    return list(by_user.values())


class StoreSink(DynamicSink[UserWrite]):
    """Writes each batch of coalesced user writes to the store in one round trip."""

    def __init__(self, url: str, *, key_prefix: str = "oo", freshness: bool = True) -> None:
        self.url = url
        self.key_prefix = key_prefix
        self.freshness = freshness

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _StorePartition:
        return _StorePartition(self.url, self.key_prefix, self.freshness)


def dead_letter_sink(bootstrap: str) -> KafkaSink:
    return KafkaSink(
        [bootstrap], topic=None, add_config={"acks": "all", "enable.idempotence": "true"}
    )


def to_dead_letter(
    rejected: Rejected, *, topic_prefix: str = ""
) -> KafkaSinkMessage[bytes | None, bytes]:
    return KafkaSinkMessage(
        key=rejected.key,
        value=rejected.raw,
        topic=topic_prefix + topics.DEADLETTER,
        headers=rejected.headers(),
    )


class _RejectsPartition(StatelessSinkPartition[Rejected]):
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")

    def write_batch(self, items: Iterable[Rejected]) -> None:
        for item in items:
            self._file.write(item.as_json_line() + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class RejectsFileSink(DynamicSink[Rejected]):
    """Rejected records as JSON lines (line, source, reason, raw) in a file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RejectsPartition:
        suffix = "" if worker_count == 1 else f".{worker_index}"
        return _RejectsPartition(self.path.with_name(self.path.name + suffix))
