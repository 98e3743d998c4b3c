"""One order across the two topics, whatever the timing (ADR 0006), on real Kafka and Redis.

A history in event-time order published in one burst (thousands of messages of both topics
on the same Kafka millisecond) must give the same store as the same history published
slowly (one millisecond apart), and `export` of the topics must be an event log whose
`backfill` equals what the flow stored.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from connectors import topics
from connectors.codec import from_json, to_json
from connectors.kafka import ensure_topics
from tests.cli import oo_features
from tests.e2e.test_flow_e2e import stored_view, valid_events
from tests.fixtures_services import service_env

USERS, DAYS, SEED = 12, 45, 20261202
BURST = 2_000
"""Messages per Kafka millisecond in the burst."""


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated history in event-time order (signals first at equal times, the merge's
    own tie-break), with duplicates."""
    raw = tmp_path_factory.mktemp("order") / "generated.jsonl"
    oo_features(
        "generate",
        *("--users", str(USERS), "--days", str(DAYS), "--seed", str(SEED)),
        *("--duplicates", "0.01", "--out", str(raw)),
    )
    events, _ = valid_events(raw)
    events.sort(
        key=lambda e: (
            e.occurred_at.ToMilliseconds(),
            e.WhichOneof("payload") in topics.FEEDBACK_PAYLOADS,
        )
    )
    path = raw.with_name("history.jsonl")
    path.write_text("".join(to_json(e) + "\n" for e in events))
    return path


def publish(bootstrap: str, prefix: str, path: Path, stamps: list[int]) -> None:
    """Every line of `path` to its topic, keyed by user, with the given Kafka timestamps."""
    names = [prefix + t for t in (topics.SIGNALS, topics.FEEDBACK, topics.DEADLETTER)]
    ensure_topics(bootstrap, names, partitions=2)
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "partitioner": "murmur2_random",
            "linger.ms": 50,
            # Retries while a new topic gets its leader must not reorder a partition.
            "enable.idempotence": True,
            # One request at a time: a retried request never lets a later one confirm it
            # unwritten (ADR 0048).
            "max.in.flight.requests.per.connection": 1,
        }
    )
    for line, stamp in zip(path.read_text().splitlines(), stamps, strict=True):
        event = from_json(line)
        producer.produce(
            topics.topic_for(event, prefix=prefix),
            event.SerializeToString(),
            event.user_id.encode(),
            timestamp=stamp,
        )
    assert producer.flush(30) == 0


def env_for(services: Any, prefix: str, key_prefix: str) -> dict[str, str]:
    return service_env(services, prefix, key_prefix)


def test_a_burst_gives_the_same_store_as_a_slow_publication(
    services: Any, history: Path, topic_prefix: str, key_prefix: str, tmp_path: Path
) -> None:
    events, _ = valid_events(history)
    users = sorted({e.user_id for e in events})
    kinds = {e.WhichOneof("payload") in topics.FEEDBACK_PAYLOADS for e in events}
    assert kinds == {True, False}, "the history needs both topics"
    burst, slow = topic_prefix + "burst.", topic_prefix + "slow."
    # Recent timestamps: older than the topics' retention (24 h locally), the broker could
    # delete the messages in the middle of the test.
    base_ms = int(time.time() * 1000) - 3_600_000
    publish(
        services.kafka_bootstrap, burst, history, [base_ms + i // BURST for i in range(len(events))]
    )
    publish(services.kafka_bootstrap, slow, history, [base_ms + i for i in range(len(events))])
    garbage = Producer({"bootstrap.servers": services.kafka_bootstrap})
    garbage.produce(burst + topics.FEEDBACK, b"\xff not an event", b"u00001", timestamp=base_ms)
    assert garbage.flush(30) == 0
    for prefix, keys in ((burst, key_prefix + "b"), (slow, key_prefix + "s")):
        oo_features("flow", "--stop-at-end", env=env_for(services, prefix, keys), rejects_ok=True)
    from_burst = stored_view(services.redis_url, key_prefix + "b", users)
    from_slow = stored_view(services.redis_url, key_prefix + "s", users)
    missing = [u for u, v in from_slow.items() if v is None]
    assert not missing, f"nothing stored for {missing}"
    differing = [u for u in users if from_burst[u] != from_slow[u]]
    assert not differing, f"{len(differing)} of {len(users)} users differ, first {differing[0]}"

    # The export of the burst's topics is an event log whose backfill is what the flow stored.
    exported = tmp_path / "exported.jsonl"
    result = oo_features(
        "export", "--out", str(exported), env=env_for(services, burst, key_prefix), check=False
    )
    assert result.returncode == 1, result.stderr  # one message rejected, the rest exported
    assert len(exported.read_text().splitlines()) == len(events)
    rejects = Path(f"{exported}.rejects.jsonl").read_text().splitlines()
    [reject] = [json.loads(line) for line in rejects]
    assert reject["topic"] == burst + topics.FEEDBACK and "do not parse" in reject["reason"]
    oo_features(
        "backfill",
        str(exported),
        *("--store-url", services.redis_url, "--key-prefix", key_prefix + "bf"),
    )
    assert stored_view(services.redis_url, key_prefix + "bf", users) == from_burst
