"""Acceptance (issue 10, "Poison"): no message and no line can stop the flow or a file reader.

Every shape of `tests/poison.py` sits between good events, on real Kafka topics (published as
raw bytes, compressed) and in an event-log file. The flow exits 0, each bad message is in the
dead-letter topic with its reason and origin (a letter too large for the topic is cut and says
so), each bad line is a reject with its line number, and the good users' features equal a
backfill of the good events alone.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from connectors import topics
from connectors.codec import to_json
from connectors.kafka import ensure_topics
from tests.cli import oo_features
from tests.e2e.test_flow_e2e import stored_view
from tests.fixtures_services import service_env
from tests.poison import file_lines, good_event, kafka_shapes, preference

USERS = ["pz-u1", "pz-u2", "pz-u3"]


def good_events() -> list[Any]:
    """A few days of task completions, a mood and a pinned tolerance per user, in time order."""
    events = []
    for day in range(1, 6):
        for n, user_id in enumerate(USERS):
            events.append(good_event(user_id, 10 * day + n, day=day))
    for user_id in USERS[:2]:
        pinned = preference(user_id, "2.5", "pin")
        pinned.occurred_at.FromJsonString("2026-05-05T23:00:00Z")
        events.append(pinned)
    return events


def _env(services: Any, topic_prefix: str, key_prefix: str) -> dict[str, str]:
    return service_env(services, topic_prefix, key_prefix)


def _reference(services: Any, tmp_path: Path, key_prefix: str) -> dict[str, Any]:
    """The good events alone, backfilled: what every run must store for the good users."""
    path = tmp_path / "good.jsonl"
    path.write_text("".join(to_json(e) + "\n" for e in good_events()))
    oo_features(
        "backfill", str(path), "--store-url", services.redis_url, "--key-prefix", key_prefix
    )
    view = stored_view(services.redis_url, key_prefix, USERS)
    assert all(view[u] is not None and view[u]["params"] for u in USERS)
    return view


def _dead_letters(bootstrap: str, topic: str) -> list[tuple[dict[str, bytes], bytes, Any]]:
    """(headers, value, key) of every message of `topic`, partition by partition: up to the
    high watermark the broker reports for each, so what is compared is what the broker holds."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "poison-dlq"})
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    ends = {}
    for p in meta.partitions:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        if high > 0:
            ends[p] = high
    consumer.assign([TopicPartition(topic, p, 0) for p in ends])
    letters, deadline = [], time.monotonic() + 60
    while ends:
        assert time.monotonic() < deadline, (
            f"{topic}: partitions {sorted(ends)} not read to their end"
        )
        msg = consumer.poll(1)
        if msg is None or msg.error():
            continue
        letters.append((dict(msg.headers() or []), msg.value() or b"", msg.key()))
        if msg.offset() + 1 >= ends.get(msg.partition(), 0):
            ends.pop(msg.partition(), None)
    consumer.close()
    return letters


def test_poison_messages_go_to_the_dead_letters_and_the_flow_goes_on(
    services: Any, topic_prefix: str, key_prefix: str, tmp_path: Path
) -> None:
    signals, feedback, deadletter = (
        topic_prefix + t for t in (topics.SIGNALS, topics.FEEDBACK, topics.DEADLETTER)
    )
    # The event topics take a 2 MB message (the dead-letter topic keeps the broker's 1 MiB).
    admin = AdminClient({"bootstrap.servers": services.kafka_bootstrap})
    big = {"max.message.bytes": str(4 * 1024 * 1024)}
    created = admin.create_topics([NewTopic(t, 2, 1, config=big) for t in (signals, feedback)])
    for future in created.values():
        future.result(30)
    ensure_topics(services.kafka_bootstrap, [deadletter], partitions=1)
    producer = Producer(
        {
            "bootstrap.servers": services.kafka_bootstrap,
            "compression.type": "lz4",
            "message.max.bytes": 10_000_000,
            "partitioner": "murmur2_random",
            "enable.idempotence": True,
            # One request at a time: a retried request never lets a later one confirm it
            # unwritten (ADR 0048).
            "max.in.flight.requests.per.connection": 1,
        }
    )
    offsets: dict[str, tuple[int, int]] = {}

    def record(name: str) -> Any:
        def delivered(error: Any, msg: Any) -> None:
            assert error is None, f"{name}: {error}"
            offsets[name] = (msg.partition(), msg.offset())

        return delivered

    shapes = kafka_shapes(USERS[0])
    good = good_events()
    per_shape = len(good) // len(shapes) + 1
    for i, shape in enumerate(shapes):
        for event in good[i * per_shape : (i + 1) * per_shape]:
            producer.produce(signals, event.SerializeToString(), event.user_id.encode())
        producer.produce(signals, shape.value, shape.key, on_delivery=record(shape.name))
        producer.flush(30)
    for event in good[len(shapes) * per_shape :]:
        producer.produce(signals, event.SerializeToString(), event.user_id.encode())
    assert producer.flush(30) == 0 and len(offsets) == len(shapes)

    env = _env(services, topic_prefix, key_prefix)
    result = oo_features("flow", "--stop-at-end", env=env, check=False)
    # It dead-lettered every shape and went on: exit 1 says it rejected some, like backfill.
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and f"rejected {len(shapes)}" in result.stdout

    letters = _dead_letters(services.kafka_bootstrap, deadletter)
    assert len(letters) == len(shapes), [h.get("oo.reason") for h, _, _ in letters]
    by_origin = {(int(h["oo.partition"]), int(h["oo.offset"])): (h, v, k) for h, v, k in letters}
    for shape in shapes:
        headers, value, key = by_origin[offsets[shape.name]]
        assert headers["oo.topic"].decode() == signals
        reason = headers["oo.reason"].decode()
        assert reason.startswith("in step 'read_events': ") and shape.why in reason, (
            shape.name,
            reason,
        )
        assert key == shape.key, shape.name
        if "oo.truncated" in headers:  # too large for the dead-letter topic even compressed
            assert shape.name == "2 MB random"
            assert int(headers["oo.truncated"]) == len(shape.value or b"")
            assert value == (shape.value or b"")[: len(value)] and len(value) < 1024 * 1024
        else:
            assert value == shape.value, shape.name
    assert "oo.truncated" in by_origin[offsets["2 MB random"]][0], "2 MB cannot fit uncut"

    expected = _reference(services, tmp_path, key_prefix + "-ref")
    assert stored_view(services.redis_url, key_prefix, USERS) == expected


def _file_with_bad_lines(path: Path) -> tuple[list[int], int]:
    """Good and bad lines interleaved, with a byte-order mark; (bad line numbers, good count)."""
    lines: list[bytes] = []
    bad_numbers = []
    good = [to_json(e).encode() for e in good_events()]
    bad = [line for _, line, _ in file_lines(USERS[0])]
    for i, line in enumerate(good):
        lines.append(line)
        if i < len(bad):
            lines.append(bad[i])
            bad_numbers.append(len(lines))
    path.write_bytes(b"\xef\xbb\xbf" + b"\n".join(lines) + b"\n")
    return bad_numbers, len(good)


def _reject_lines(path: Path) -> list[int]:
    return [json.loads(line)["line"] for line in path.read_text().splitlines()]


@pytest.mark.parametrize("reader", ["produce", "backfill", "flow --from"])
def test_every_file_reader_rejects_bad_lines_and_reads_the_rest(
    services: Any, topic_prefix: str, key_prefix: str, tmp_path: Path, reader: str
) -> None:
    path = tmp_path / "events.jsonl"
    rejects = tmp_path / "rejects.jsonl"
    bad_numbers, good_count = _file_with_bad_lines(path)
    env = _env(services, topic_prefix, key_prefix)
    command = {
        "produce": ["produce", str(path)],
        "backfill": ["backfill", str(path)],
        "flow --from": ["flow", "--from", str(path)],
    }[reader]
    result = oo_features(*command, "--rejects", str(rejects), env=env, check=False)
    assert result.returncode in (0, 1), result.stderr[-3000:]  # 1: some lines were rejected
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert _reject_lines(rejects) == bad_numbers
    if reader == "produce":
        # Exactly the good events were published, in file order (what the flow then reads is
        # the Kafka test's subject).
        assert f"published {good_count}, rejected {len(bad_numbers)}" in result.stdout
        published = _published(services.kafka_bootstrap, topic_prefix + topics.SIGNALS)
        assert sorted(published) == sorted(e.SerializeToString() for e in good_events())
        return
    expected = _reference(services, tmp_path, key_prefix + "-ref")
    assert stored_view(services.redis_url, key_prefix, USERS) == expected


def _published(bootstrap: str, topic: str) -> list[bytes]:
    return [value for _, value, _ in _dead_letters(bootstrap, topic)]
