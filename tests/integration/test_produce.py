"""The producer against the real local Kafka: what is published is exactly what was valid.

Events go in as JSON and come out of Kafka as JSON again, losslessly; each user's events
keep their order across partitions; `oo-features produce` publishes the good lines of a
file, writes the bad ones to a rejects file, and says so in its exit status; an
unreachable Kafka is a clear, bounded failure with nothing reported as published.
"""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from connectors import codec, topics
from connectors.exceptions import DeliveryError, KafkaUnavailableError, ValidationError
from connectors.jsonl import parse_event
from connectors.kafka import EventProducer, consumer_config
from proto import events_pb2 as pb
from tests.fixtures_services import Services

ROOT = Path(__file__).resolve().parents[2]
PAYLOAD_BODIES: dict[str, dict[str, object]] = {
    "taskCreated": {"taskId": "t1", "projectId": "p1", "dueAt": "2026-05-02T00:00:00Z"},
    "taskUpdated": {"taskId": "t1", "projectId": "p2", "dueAt": "2026-05-03T12:00:00.500Z"},
    "taskCompleted": {"taskId": "t1", "projectId": "p2"},
    "taskDeleted": {"taskId": "t2"},
    "habitChecked": {"habitId": "h1"},
    "calendarEventObserved": {
        "calendarEventId": "c1",
        "startsAt": "2026-05-01T09:00:00Z",
        "endsAt": "2026-05-01T09:30:00.000000001Z",
    },
    "moodLogged": {"score": 4},
    "contextChanged": {"context": "commuting", "active": True},
    "profileUpdated": {"tz": "Europe/Paris"},
    "preferenceSet": {"agentId": "time_of_day", "param": "hour", "valueJson": '{"h": 9}'},
    "consentChanged": {"consent": "tasks", "granted": True},
    "userDeleted": {},
    "tipShown": {"tipId": "tip-1", "agentIds": ["momentum", "focus_area"]},
    "tipReaction": {"tipId": "tip-1", "reaction": "REACTION_LIKE"},
}


def _line(event_id: str, user_id: str, payload: str, body: dict[str, object]) -> str:
    return json.dumps(
        {
            "eventId": event_id,
            "userId": user_id,
            "occurredAt": "2026-05-01T06:30:00.123Z",
            "utcOffsetMinutes": -300,
            "source": "integration-test",
            payload: body,
        }
    )


def _consume(
    bootstrap: str, names: list[str], expected: int, *, linger_s: float = 2.0, timeout_s: float = 60
) -> list[tuple[str, int, bytes, bytes]]:
    """(topic, partition, key, value) of every record of `names`, from the beginning.

    Reads until `expected` records arrived, then `linger_s` more to catch any extra.
    """
    consumer = Consumer(consumer_config(bootstrap, f"test-{time.time_ns()}"))
    metadata = consumer.list_topics(timeout=10)
    consumer.assign(
        [
            TopicPartition(name, partition, 0)
            for name in names
            for partition in metadata.topics[name].partitions
        ]
    )
    records: list[tuple[str, int, bytes, bytes]] = []
    deadline = time.monotonic() + timeout_s
    settle: float | None = None
    try:
        while time.monotonic() < deadline and (settle is None or time.monotonic() < settle):
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            records.append((msg.topic(), msg.partition(), msg.key(), msg.value()))
            if len(records) >= expected and settle is None:
                settle = time.monotonic() + linger_s
    finally:
        consumer.close()
    return records


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cli(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "oo_features.cli", "produce", *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_every_payload_type_round_trips_through_kafka(
    services: Services, topic_prefix: str
) -> None:
    lines = {
        f"e-{payload}": _line(f"e-{payload}", f"u-{i}", payload, body)
        for i, (payload, body) in enumerate(PAYLOAD_BODIES.items())
    }
    assert len(lines) == len(pb.Event.DESCRIPTOR.oneofs_by_name["payload"].fields)
    with EventProducer(bootstrap=services.kafka_bootstrap, topic_prefix=topic_prefix) as producer:
        for line in lines.values():
            producer.publish(parse_event(line))
        report = producer.flush()
    assert report.published == len(lines) and report.failed == []

    names = [topic_prefix + topics.SIGNALS, topic_prefix + topics.FEEDBACK]
    records = _consume(services.kafka_bootstrap, names, len(lines))
    assert len(records) == len(lines)
    for topic, _, key, value in records:
        event = codec.decode(value)
        original = lines[event.event_id]
        assert json.loads(codec.to_json(event)) == json.loads(original)  # lossless
        assert key == event.user_id.encode()
        feedback = event.WhichOneof("payload") in ("tip_shown", "tip_reaction")
        assert topic == topic_prefix + (topics.FEEDBACK if feedback else topics.SIGNALS)


def test_each_users_order_is_kept_across_partitions(services: Services, topic_prefix: str) -> None:
    rng = random.Random(3)
    users = [f"user-{n:03d}" for n in range(60)]
    sent: dict[str, list[str]] = defaultdict(list)
    with EventProducer(
        bootstrap=services.kafka_bootstrap, topic_prefix=topic_prefix, partitions=6
    ) as producer:
        for n in range(3000):
            user = rng.choice(users)
            event = parse_event(_line(f"{user}/{len(sent[user])}", user, "habitChecked", {}))
            sent[user].append(event.event_id)
            producer.publish(event)
            if n % 500 == 0:
                producer.poll(0)
        report = producer.flush()
    assert report.published == 3000 and not report.failed

    records = _consume(services.kafka_bootstrap, [topic_prefix + topics.SIGNALS], 3000)
    received: dict[str, list[str]] = defaultdict(list)
    partitions_of: dict[str, set[int]] = defaultdict(set)
    for _, partition, key, value in records:
        received[key.decode()].append(codec.decode(value).event_id)
        partitions_of[key.decode()].add(partition)
    assert received == sent
    assert all(len(p) == 1 for p in partitions_of.values())  # a user lives on one partition
    assert len(set().union(*partitions_of.values())) > 1  # and users are spread over several


def test_publish_validates_and_reports_each_delivery(services: Services, topic_prefix: str) -> None:
    outcomes: list[tuple[str, Exception | None]] = []
    with EventProducer(bootstrap=services.kafka_bootstrap, topic_prefix=topic_prefix) as producer:
        with pytest.raises(ValidationError, match=r"mood_logged\.score"):
            producer.publish(parse_event(_line("bad", "u", "moodLogged", {"score": 9})))
        producer.publish(
            parse_event(_line("good", "u", "moodLogged", {"score": 2})),
            on_delivery=lambda event, error: outcomes.append((event.event_id, error)),
        )
        report = producer.flush()
        producer.ping()
    assert report.published == 1 and not report.failed
    assert outcomes == [("good", None)]


def test_refused_events_are_reported_failed_with_their_ids(
    services: Services, topic_prefix: str, kafka_admin: AdminClient
) -> None:
    # A topic that takes only small batches: the broker refuses the large event.
    name = topic_prefix + topics.SIGNALS
    created = kafka_admin.create_topics(
        [
            NewTopic(
                name, num_partitions=1, replication_factor=1, config={"max.message.bytes": "2000"}
            )
        ]
    )
    created[name].result(timeout=30)
    failures: list[tuple[str, Exception | None]] = []
    with EventProducer(
        bootstrap=services.kafka_bootstrap,
        topic_prefix=topic_prefix,
        create_topics=False,
        extra_config={"compression.type": "none", "linger.ms": 0},
    ) as producer:
        producer.publish(parse_event(_line("small", "u", "habitChecked", {})))
        producer.flush()
        producer.publish(
            parse_event(_line("large", "u", "habitChecked", {"habitId": "h" * 5000})),
            on_delivery=lambda event, error: failures.append((event.event_id, error)),
        )
        report = producer.flush()
    assert report.published == 0
    assert [event_id for event_id, _ in report.failed] == ["large"]
    assert "too large" in report.failed[0][1].lower() or "size" in report.failed[0][1].lower()
    assert failures[0][0] == "large" and isinstance(failures[0][1], DeliveryError)


def test_produce_publishes_exactly_the_good_lines(
    services: Services, topic_prefix: str, tmp_path: Path
) -> None:
    good_ids: list[str] = []
    bad: dict[int, tuple[str, str | None]] = {}  # line number -> (expected reason part, field)
    lines: list[str] = []
    for n in range(1, 401):
        if n % 37 == 0:
            lines.append(_line(f"e{n}", "u-1", "moodLogged", {"score": 0}))
            bad[n] = ("expected 1-5", "mood_logged.score")
        elif n % 53 == 0:
            lines.append('{"eventId": "x", "userId": ')
            bad[n] = ("canonical JSON", None)
        elif n % 61 == 0:
            lines.append(_line(f"e{n}", "no spaces allowed", "habitChecked", {}))
            bad[n] = ("expected to match", "user_id")
        elif n % 67 == 0:
            lines.append(_line(f"e{n}", "u-1", "unknownPayload", {}))
            bad[n] = ("unknownPayload", None)
        else:
            lines.append(_line(f"e{n}", f"u-{n % 7}", "habitChecked", {"habitId": "h"}))
            good_ids.append(f"e{n}")
    source = tmp_path / "events.jsonl"
    source.write_text("\n".join(lines) + "\n")
    rejects = tmp_path / "bad.jsonl"

    result = _cli(
        str(source),
        "--bootstrap", services.kafka_bootstrap,
        "--topic-prefix", topic_prefix,
        "--rejects", str(rejects),
        "--no-progress",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert f"published {len(good_ids)}, rejected {len(bad)}" in result.stdout
    assert str(rejects) in result.stderr

    records = _consume(services.kafka_bootstrap, [topic_prefix + topics.SIGNALS], len(good_ids))
    assert sorted(codec.decode(value).event_id for *_, value in records) == sorted(good_ids)

    written = [json.loads(row) for row in rejects.read_text().splitlines()]
    assert [row["line"] for row in written] == sorted(bad)
    for row in written:
        reason_part, field = bad[row["line"]]
        assert reason_part in row["reason"]
        assert row["field"] == field
        assert row["raw"] == lines[row["line"] - 1]
        assert row["source"] == str(source)


def test_produce_from_stdin_exits_zero_when_all_published(
    services: Services, topic_prefix: str, tmp_path: Path
) -> None:
    text = "".join(
        _line(f"s{n}", "u-9", "taskDeleted", {"taskId": f"t{n}"}) + "\n" for n in range(50)
    )
    result = subprocess.run(
        [sys.executable, "-m", "oo_features.cli", "produce", "-", "--bootstrap",
         services.kafka_bootstrap, "--topic-prefix", topic_prefix],
        cwd=tmp_path, input=text, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "published 50, rejected 0" in result.stdout
    assert not (tmp_path / "stdin.rejects.jsonl").exists()


def test_produce_fails_clearly_when_kafka_is_down(tmp_path: Path) -> None:
    source = tmp_path / "events.jsonl"
    source.write_text(_line("e1", "u", "habitChecked", {}) + "\n")
    address = f"127.0.0.1:{_closed_port()}"
    result = _cli(str(source), "--bootstrap", address, "--timeout", "3", "--no-progress")
    assert result.returncode == 2
    assert f"Kafka at {address} did not answer within 3 s" in result.stderr
    assert "nothing was published" in result.stderr
    assert "published 1" not in result.stdout + result.stderr
    assert result.stderr.count("\n") <= 3, result.stderr  # one clear error, not a log flood


def test_event_producer_raises_when_kafka_is_down() -> None:
    with pytest.raises(KafkaUnavailableError, match="did not answer within 2 s"):
        EventProducer(bootstrap=f"127.0.0.1:{_closed_port()}", timeout_s=2)


def test_produce_usage_errors_exit_two(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = _cli("-", "--no-progress", stdin="", env=env)
    assert result.returncode == 2 and "OO_KAFKA_BOOTSTRAP" in result.stderr
    result = _cli(str(tmp_path / "missing.jsonl"), "--bootstrap", "127.0.0.1:1")
    assert result.returncode == 2 and "cannot read" in result.stderr


def test_produce_rejects_events_over_the_size_limits_with_their_lines(
    services: Services, topic_prefix: str, tmp_path: Path
) -> None:
    """An event over the 64 KiB event bound, and a line over the 1 MiB line bound (also over
    Kafka's 1 MB message limit), are rejects with their line and reason, not a traceback; the
    lines around them are published."""
    over_event = _line("mid", "u-1", "habitChecked", {"habitId": "h" * 200_000})
    over_line = _line("big", "u-1", "habitChecked", {"habitId": "h" * 1_200_000})
    lines = [_line(f"e{n}", "u-1", "habitChecked", {"habitId": "h"}) for n in range(3)]
    lines.insert(1, over_event)
    lines.insert(3, over_line)
    source = tmp_path / "events.jsonl"
    source.write_text("\n".join(lines) + "\n")
    rejects = tmp_path / "bad.jsonl"

    result = _cli(
        str(source),
        "--bootstrap", services.kafka_bootstrap,
        "--topic-prefix", topic_prefix,
        "--rejects", str(rejects),
        "--no-progress",
    )  # fmt: skip

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "published 3, rejected 2" in result.stdout
    rows = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [row["line"] for row in rows] == [2, 4]
    assert "at most 65536 bytes serialized" in rows[0]["reason"], rows[0]["reason"]
    assert "characters long; at most 1048576" in rows[1]["reason"], rows[1]["reason"]
    records = _consume(services.kafka_bootstrap, [topic_prefix + topics.SIGNALS], 3)
    assert sorted(codec.decode(value).event_id for *_, value in records) == ["e0", "e1", "e2"]
