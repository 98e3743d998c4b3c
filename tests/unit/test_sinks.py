"""The event sinks are connectors: one `EventSink` seam, connector errors (issue 14)."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.exceptions import ConnectorError, EventSinkError, KafkaUnavailableError
from connectors.kafka import EventProducer
from connectors.sinks import EventSink, FileEventSink, KafkaEventSink
from serving import events


def test_both_sinks_are_the_one_seam(tmp_path: Path) -> None:
    def unreachable() -> EventProducer:
        raise KafkaUnavailableError("Kafka at 127.0.0.1:1 did not answer within 1 s")

    for sink in (KafkaEventSink(factory=unreachable), FileEventSink(tmp_path / "log.jsonl")):
        assert isinstance(sink, EventSink)


def test_a_file_sink_failure_is_a_connector_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    sink = FileEventSink(blocker / "log.jsonl")  # a directory that cannot exist
    event = events.user_deleted("u-1", 1_700_000_000_000)
    with pytest.raises(EventSinkError, match=f"user_deleted {event.event_id} for user u-1"):
        sink.emit_confirmed(event, timeout_s=1)
    assert issubclass(EventSinkError, ConnectorError)
    failed: list[str] = []
    FileEventSink(blocker / "log.jsonl", on_failure=failed.append).emit(event)
    assert failed == ["user_deleted"]


def test_an_unreachable_kafka_is_a_connector_error_and_retried_later() -> None:
    calls: list[int] = []

    def unreachable() -> EventProducer:
        calls.append(1)
        raise KafkaUnavailableError("Kafka at 127.0.0.1:1 did not answer within 1 s")

    sink = KafkaEventSink(factory=unreachable, retry_after_s=60)
    with pytest.raises(EventSinkError, match=r"Kafka unreachable: Kafka at 127\.0\.0\.1:1"):
        sink.check(timeout_s=1)
    failed: list[str] = []
    KafkaEventSink(factory=unreachable, on_failure=failed.append).emit(
        events.tip_reaction("u-1", "t-1", "like")
    )
    assert failed == ["tip_reaction"]
    with pytest.raises(EventSinkError):
        sink.emit_confirmed(events.user_deleted("u-1", 1), timeout_s=1)
    assert len(calls) == 2  # the second sink's try; the first sink waits retry_after_s


def test_the_api_builds_events_and_never_imports_a_sink_module_of_its_own() -> None:
    import importlib.util

    assert importlib.util.find_spec("serving.sinks") is None
    assert events.tip_shown("u-1", "t-1", ["momentum"]).tip_shown.agent_ids == ["momentum"]
