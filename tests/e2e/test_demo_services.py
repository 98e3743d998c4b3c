"""`oo-features demo` on the real services (README, "Set OO_KAFKA_BOOTSTRAP and OO_STORE_URL").

Real Kafka and Redis from the `services` fixture. Before the demo, the test's own default
namespace (topics `<topic_prefix>oo.*`, store keys `<key_prefix>:*`) holds other data for
the very users the demo generates (fewer days, another seed), as an earlier run or a real
deployment would. Then the demo runs twice against the same services and:

1. each run lands in a namespace of its own (`<topic_prefix>demo-<run>.`,
   `<key_prefix>-demo-<run>`), different from the other run's;
2. both show the same features for the same user, and store for every user exactly what a
   backfill of the run's own event log computes (nothing of the other data mixed in);
3. each run's topics hold exactly its own events;
4. every other topic and store key is as it was: no new topic or key outside the two
   namespaces, no message added to the default topics, no stored value changed.

Two small demos (10 users x 14 days): about 40 s on the shared 2-core machine.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from connectors.codec import from_json
from connectors.kafka import EventProducer
from connectors.store import open_store
from connectors.topics import FEEDBACK, SIGNALS, topic_for
from flows.backfill import backfill
from oo_features.generate import generate_lines
from tests.fixtures_services import service_env

USERS, DAYS, SEED = 10, 14, 7
NAMESPACE_LINE = re.compile(r"in a namespace of its own: topics (\S+)\*, store keys (\S+):\*")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_demo(workdir: Path, env: dict[str, str]) -> str:
    """One `oo-features demo --once` on the services; its standard output."""
    result = subprocess.run(
        [
            *(sys.executable, "-m", "oo_features.cli", "demo", "--once"),
            *("--users", str(USERS), "--days", str(DAYS), "--seed", str(SEED)),
            *("--port", str(free_port()), "--workdir", str(workdir)),
        ],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("OO_")}, **env},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=workdir.parent,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


def shown_features(out: str) -> list[str]:
    """The lines the demo prints for its user: `4/4 user ...` and each agent's parameters."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("4/4 user "))
    end = lines.index("", start)
    return lines[start:end]


def topic_sizes(bootstrap: str) -> dict[str, int]:
    """Every topic of the cluster and how many messages it holds (sum of high watermarks)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "oo-test-sizes", "enable.auto.commit": False}
    )
    try:
        sizes: dict[str, int] = {}
        for name, meta in consumer.list_topics(timeout=10).topics.items():
            if name.startswith("__"):
                continue
            sizes[name] = sum(
                consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1]
                for p in meta.partitions
            )
        return sizes
    finally:
        consumer.close()


def redis_values(client: Any, prefix: str) -> dict[bytes, bytes | None]:
    """Every key starting with `prefix` and its serialized value (Redis DUMP)."""
    return {key: client.dump(key) for key in client.scan_iter(match=f"{prefix}*", count=5_000)}


def features_of(store: Any) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for user_id in sorted(store.user_ids()):
        user = store.read_user(user_id)
        assert user is not None, user_id
        out[user_id] = {a: (s.params, s.snippet) for a, s in user.agents.items()}
    return out


@pytest.fixture
def stores() -> Iterator[Callable[..., Any]]:
    """`open_store`, closing what it opened at the end of the test."""
    opened: list[Any] = []

    def opener(url: str, **kwargs: Any) -> Any:
        opened.append(open_store(url, **kwargs))
        return opened[-1]

    yield opener
    for store in opened:
        store.close()


def test_two_demo_runs_on_real_services_show_the_same_features_and_leave_the_rest_alone(
    services: Any,
    topic_prefix: str,
    key_prefix: str,
    redis_client: Any,
    stores: Callable[..., Any],
    tmp_path: Path,
) -> None:
    env = service_env(services, topic_prefix, key_prefix)
    # Other data in the default namespace, for the same users: on the topics and in the store.
    other_log = tmp_path / "other.jsonl"
    other_log.write_text("".join(line + "\n" for line in generate_lines(USERS, 3, SEED + 1)))
    producer = EventProducer(bootstrap=services.kafka_bootstrap, topic_prefix=topic_prefix)
    with other_log.open() as handle:
        for line in handle:
            producer.publish(from_json(line))
    other = producer.flush()  # every report, however slow: the topics are counted below
    producer.close()
    assert other.ok and other.published > 0, other.failed[:3]
    other_store = stores(services.redis_url, key_prefix=key_prefix)
    assert backfill(other_log, other_store, rejects_path=tmp_path / "other.rejects").rejected == 0
    other_features = features_of(other_store)
    assert len(other_features) == USERS
    topics_before = topic_sizes(services.kafka_bootstrap)
    keys_before = set(redis_client.scan_iter(match="*", count=5_000))
    values_before = redis_values(redis_client, key_prefix + ":")

    runs = []
    for n in (1, 2):
        workdir = tmp_path / f"run{n}"
        workdir.mkdir()
        out = run_demo(workdir, env)
        found = NAMESPACE_LINE.search(out)
        assert found is not None, out
        runs.append((workdir, out, found.group(1), found.group(2)))

    # 1. Each run in its own namespace, under the configured prefixes.
    (_, out1, topics1, keys1), (_, out2, topics2, keys2) = runs
    assert topics1 != topics2 and keys1 != keys2, (topics1, topics2)
    for topics, keys in ((topics1, keys1), (topics2, keys2)):
        assert topics.startswith(f"{topic_prefix}demo-") and topics.endswith("."), topics
        assert keys.startswith(f"{key_prefix}-demo-"), keys

    # 2. The same features for the same user, shown and stored; each equals its own backfill.
    assert shown_features(out1) == shown_features(out2)
    assert len(shown_features(out1)) > 1, out1
    stored = []
    for workdir, _out, _topics, keys in runs:
        store = stores(services.redis_url, key_prefix=keys)
        alone = stores(f"sqlite:///{workdir / 'backfill.db'}")
        report = backfill(workdir / "events.jsonl", alone, rejects_path=workdir / "bf.rejects")
        assert report.rejected == 0
        features = features_of(store)
        assert len(features) == USERS and features == features_of(alone), keys
        stored.append(features)
    assert stored[0] == stored[1]
    assert stored[0] != other_features  # the other data would have shown

    # 3. Each run's signal topic holds exactly the signals of its own log (its feedback
    # topic also gets the TipShown of the tip the demo shows).
    topics_after = topic_sizes(services.kafka_bootstrap)
    for workdir, _out, topics, _keys in runs:
        with (workdir / "events.jsonl").open() as handle:
            logged = Counter(topic_for(from_json(line), prefix=topics) for line in handle)
        assert topics_after[topics + SIGNALS] == logged[topics + SIGNALS], topics
        assert topics_after.get(topics + FEEDBACK, 0) >= logged[topics + FEEDBACK], topics

    # 4. Nothing else touched: no topic or key outside the two namespaces, no message added
    # to the others, no stored value changed.
    ours = (topics1, topics2)
    assert {n: s for n, s in topics_after.items() if not n.startswith(ours)} == topics_before
    new_keys = set(redis_client.scan_iter(match="*", count=5_000)) - keys_before
    outside = sorted(k for k in new_keys if not k.decode().startswith((keys1 + ":", keys2 + ":")))
    assert outside == [], outside[:10]
    assert redis_values(redis_client, key_prefix + ":") == values_before
    assert features_of(other_store) == other_features
