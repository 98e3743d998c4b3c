"""End to end on real Kafka and Redis: generate -> produce -> flow -> Redis equals the reference.

One generated log with every kind of trouble (out-of-order delivery, duplicates,
too-late and invalid events, consent revocations, deletions) goes through the
real CLI; the stored features must be exactly what the numpy reference computes
from the same log, the backfill must agree with the stream, and 2 workers or 2
processes must agree with 1.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from connectors import topics
from connectors.codec import from_json, validate
from connectors.exceptions import ConnectorError
from connectors.store import open_store
from tests.cli import oo_features
from tests.compare import differences, view_differences
from tests.fixtures_services import _delete_keys, _delete_topics, service_env
from tests.reference import reference_features

USERS, DAYS, SEED = 300, 10, 20261125


def cli(
    *args: str, env: dict[str, str], check: bool = True, rejects_ok: bool = False
) -> subprocess.CompletedProcess[str]:
    return oo_features(*args, env=env, check=check, rejects_ok=rejects_ok)


@pytest.fixture(scope="module")
def event_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("e2e") / "events.jsonl"
    cli(
        "generate",
        "--users",
        str(USERS),
        "--days",
        str(DAYS),
        "--seed",
        str(SEED),
        "--out-of-order",
        "0.03",
        "--duplicates",
        "0.01",
        "--too-late",
        "0.005",
        "--invalid",
        "0.003",
        "--out",
        str(path),
        env={},
    )
    # Two users ask to be deleted at the end, and a late event of theirs arrives afterwards:
    # it must not bring them back.
    events, _ = valid_events(path)
    last = max(e.occurred_at.ToJsonString() for e in events)
    victims = sorted({e.user_id for e in events})[:2]
    with path.open("a") as out:
        for user_id in victims:
            out.write(
                f'{{"eventId":"{user_id}-bye","userId":"{user_id}","occurredAt":"{last}",'
                f'"userDeleted":{{}}}}\n'
            )
            out.write(
                f'{{"eventId":"{user_id}-ghost","userId":"{user_id}","occurredAt":"{events[-1].occurred_at.ToJsonString()}",'
                f'"utcOffsetMinutes":60,"taskCompleted":{{"taskId":"ghost","projectId":"p1"}}}}\n'
            )
    return path


def valid_events(path: Path) -> tuple[list[Any], int]:
    events, invalid = [], 0
    for line in path.read_text().splitlines():
        try:
            events.append(validate(from_json(line)))
        except ConnectorError:
            invalid += 1
    return events, invalid


def reborn_users(events: list[Any]) -> set[str]:
    """Users deleted and then active again: cross-topic order matters for them (features/README.md)."""
    deleted = {e.user_id for e in events if e.WhichOneof("payload") == "user_deleted"}
    last_deletion = {
        e.user_id: e.occurred_at.ToMilliseconds()
        for e in events
        if e.WhichOneof("payload") == "user_deleted"
    }
    return {
        e.user_id
        for e in events
        if e.user_id in deleted and e.occurred_at.ToMilliseconds() > last_deletion[e.user_id]
    }


def stored_view(store_url: str, key_prefix: str, user_ids: list[str]) -> dict[str, Any]:
    store = open_store(store_url, key_prefix=key_prefix)
    try:
        view = {}
        for user_id in user_ids:
            user = store.read_user(user_id)
            view[user_id] = (
                None
                if user is None
                else {
                    "params": {
                        a: {n: p for n, p in s.params.items()} for a, s in user.agents.items()
                    },
                    "extras": {a: s.extras for a, s in user.agents.items()},
                    "snippets": {a: s.snippet for a, s in user.agents.items()},
                    "feedback": user.feedback,
                }
            )
        return view
    finally:
        store.close()


@pytest.fixture(scope="module")
def streamed(
    services: Any, event_log: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """Produce the log and run the flow once with --stop-at-end; what landed in Redis."""
    import uuid

    prefix = f"e{uuid.uuid4().hex[:8]}."
    key_prefix = prefix.rstrip(".")
    env = service_env(services, prefix, key_prefix)
    produced = cli("produce", str(event_log), env=env, check=False)
    # `produce` keeps invalid lines out of Kafka; an integration that skips validation would not.
    # Publish them anyway, so the flow must dead-letter them while the rest go on.
    injected = inject_invalid(event_log, services.kafka_bootstrap, prefix)
    flow = cli("flow", "--stop-at-end", env=env, check=False)
    # Like backfill: the flow says what it rejected and exits 1 when it rejected anything.
    assert flow.returncode == 1 and "Traceback" not in flow.stderr, flow.stderr[-3000:]
    assert "rejected" in flow.stdout and "rejected 0" not in flow.stdout, flow.stdout
    yield {
        "env": env,
        "produce": produced,
        "prefix": prefix,
        "key_prefix": key_prefix,
        "injected": injected,
    }
    # Every store written by this module (stream, backfill, parallel layouts) shares the prefix.
    _delete_topics(services.kafka_bootstrap, prefix)
    _delete_keys(services.redis_url, key_prefix)


def inject_invalid(path: Path, bootstrap: str, prefix: str) -> int:
    """Publish every invalid line: as protobuf when it parses, else as its raw bytes."""
    from confluent_kafka import Producer

    from connectors.exceptions import DecodeError

    producer = Producer({"bootstrap.servers": bootstrap})
    count = 0
    for line in path.read_text().splitlines():
        try:
            event = from_json(line)
        except DecodeError:
            producer.produce(prefix + topics.SIGNALS, value=line.encode())
            count += 1
            continue
        try:
            validate(event)
        except ConnectorError:
            key = event.user_id.encode() or None
            producer.produce(prefix + topics.SIGNALS, key=key, value=event.SerializeToString())
            count += 1
    assert producer.flush(30) == 0
    return count


def test_generated_log_has_every_kind_of_trouble(event_log: Path) -> None:
    events, invalid = valid_events(event_log)
    kinds = {e.WhichOneof("payload") for e in events}
    assert len(events) >= 20_000 and len({e.user_id for e in events}) >= USERS
    assert invalid > 0
    assert {
        "user_deleted",
        "consent_changed",
        "preference_set",
        "tip_shown",
        "tip_reaction",
    } <= kinds
    ids = [e.event_id for e in events]
    assert len(ids) > len(set(ids)), "no duplicates in the log"
    ref = reference_features(events)
    assert sum(u.counters["late_dropped"] for u in ref.values()) > 0
    assert any(u.deleted for u in ref.values())


def test_produce_rejects_exactly_the_invalid_lines(
    event_log: Path, streamed: dict[str, Any]
) -> None:
    events, invalid = valid_events(event_log)
    out = streamed["produce"].stdout + streamed["produce"].stderr
    assert streamed["produce"].returncode != 0
    assert f"published {len(events)}, rejected {invalid}" in out


def test_stream_equals_reference(services: Any, event_log: Path, streamed: dict[str, Any]) -> None:
    events, _ = valid_events(event_log)
    ref = reference_features(events)
    view = stored_view(services.redis_url, streamed["key_prefix"], sorted(ref))
    # Signals and feedback travel on two topics, so their relative order per user is not kept.
    # Only across a deletion does it matter (feedback of the user's new life may be folded before
    # the deletion reaches the flow and be wiped with the old life): see features/README.md.
    problems = view_differences(ref, view, reborn_users(events))
    assert not problems, f"{len(problems)} differences, first: " + "\n".join(problems[:15])


def test_stream_carries_the_context_agent(
    services: Any, event_log: Path, streamed: dict[str, Any]
) -> None:
    """The sixth agent, added by the recipe only (features/, docs, tests): its stored parameters
    are the reference's (checked with every agent above) and past cold start for many users."""
    events, _ = valid_events(event_log)
    ref = reference_features(events)
    view = stored_view(services.redis_url, streamed["key_prefix"], sorted(ref))
    inferred = [
        u
        for u, got in view.items()
        if got is not None
        and got["params"].get("context", {}).get("done_in_context", {}).get("source") == "inferred"
        and got["snippets"].get("context")
    ]
    assert len(inferred) >= USERS // 4, f"only {len(inferred)} users with context features"
    problems = [
        d
        for user_id in inferred
        for d in differences(
            {"context": view[user_id]["params"]["context"]},
            {"context": ref[user_id].params["context"]},
            where=f"user {user_id}",
        )
    ]
    assert not problems, "\n".join(problems[:10])


def test_deleted_users_have_no_keys(
    services: Any, event_log: Path, streamed: dict[str, Any]
) -> None:
    import redis

    events, _ = valid_events(event_log)
    deleted = [u for u, r in reference_features(events).items() if r.deleted]
    assert deleted
    client = redis.Redis.from_url(services.redis_url)
    for user_id in deleted:
        keys = [k.decode() for k in client.scan_iter(match=f"{streamed['key_prefix']}:*{user_id}*")]
        assert all(":tomb:" in k for k in keys), f"{user_id} still has {keys}"


def test_invalid_events_sit_in_the_dead_letter_topic(
    services: Any, event_log: Path, streamed: dict[str, Any]
) -> None:
    _, invalid = valid_events(event_log)
    topic = streamed["prefix"] + topics.DEADLETTER
    consumer = Consumer(
        {
            "bootstrap.servers": services.kafka_bootstrap,
            "group.id": "e2e-dlq",
            "enable.partition.eof": True,
        }
    )
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
    letters, eof = [], set()
    while len(eof) < len(meta.partitions):
        msg = consumer.poll(5)
        assert msg is not None, "dead-letter topic ended early"
        if msg.error():
            eof.add(msg.partition())
            continue
        letters.append(dict(msg.headers() or []))
    consumer.close()
    assert len(letters) == invalid == streamed["injected"]
    for headers in letters:
        assert headers["oo.reason"].decode().startswith("in step 'read_events': ")
        assert headers["oo.topic"].decode() == streamed["prefix"] + topics.SIGNALS


def test_garbage_on_the_topic_goes_to_dead_letter_and_the_rest_go_on(
    services: Any, topic_prefix: str, key_prefix: str
) -> None:
    from confluent_kafka import Producer

    from connectors.kafka import ensure_topics

    names = [topic_prefix + t for t in (topics.SIGNALS, topics.FEEDBACK, topics.DEADLETTER)]
    ensure_topics(services.kafka_bootstrap, names, partitions=2, timeout_s=10)
    good = from_json(
        '{"eventId":"g1","userId":"u1","occurredAt":"2026-05-01T06:30:00Z","utcOffsetMinutes":120,'
        '"taskCompleted":{"taskId":"t1","projectId":"p1","dueAt":"2026-04-30T00:00:00Z"}}'
    )
    bad_mood = from_json(
        '{"eventId":"b1","userId":"u1","occurredAt":"2026-05-01T06:30:00Z","moodLogged":{"score":9}}'
    )
    producer = Producer({"bootstrap.servers": services.kafka_bootstrap})
    producer.produce(names[0], key=b"u1", value=b"\xff\x00 not protobuf at all")
    producer.produce(names[0], key=b"u1", value=bad_mood.SerializeToString())
    producer.produce(names[0], key=b"u1", value=good.SerializeToString())
    producer.flush(10)
    env = service_env(services, topic_prefix, key_prefix)
    cli("flow", "--stop-at-end", env=env, rejects_ok=True)
    store = open_store(services.redis_url, key_prefix=key_prefix)
    user = store.read_user("u1")
    store.close()
    assert user is not None and "momentum" in user.agents
    consumer = Consumer({"bootstrap.servers": services.kafka_bootstrap, "group.id": "dlq-check"})
    consumer.assign([TopicPartition(names[2], p, 0) for p in range(2)])
    reasons = []
    while len(reasons) < 2:
        msg = consumer.poll(10)
        assert msg is not None, f"expected 2 dead letters, got {reasons}"
        if msg.error():
            continue
        headers = dict(msg.headers() or [])
        reasons.append(headers["oo.reason"].decode())
        assert headers["oo.topic"].decode() == names[0]
        assert int(headers["oo.offset"]) >= 0
    consumer.close()
    assert any("do not parse" in r for r in reasons), reasons
    assert any("mood_logged.score" in r for r in reasons), reasons


def test_backfill_equals_stream(services: Any, event_log: Path, streamed: dict[str, Any]) -> None:
    events, _ = valid_events(event_log)
    users = sorted({e.user_id for e in events} - reborn_users(events))
    key_prefix = streamed["key_prefix"] + "bf"
    cli(
        "backfill",
        str(event_log),
        "--store-url",
        services.redis_url,
        "--key-prefix",
        key_prefix,
        env={},
        check=False,
    )
    stream = stored_view(services.redis_url, streamed["key_prefix"], users)
    batch = stored_view(services.redis_url, key_prefix, users)
    assert stream == batch


@pytest.mark.parametrize(
    "layout", [["-w", "2"], ["--processes", "2"]], ids=["2-workers", "2-processes"]
)
def test_parallel_flow_equals_single(
    services: Any, event_log: Path, streamed: dict[str, Any], layout: list[str]
) -> None:
    events, _ = valid_events(event_log)
    users = sorted({e.user_id for e in events} - reborn_users(events))
    key_prefix = streamed["key_prefix"] + layout[0].strip("-")[0]
    env = {**streamed["env"], "OO_KEY_PREFIX": key_prefix}
    cli("flow", "--stop-at-end", *layout, env=env, rejects_ok=True)
    single = stored_view(services.redis_url, streamed["key_prefix"], users)
    parallel = stored_view(services.redis_url, key_prefix, users)
    assert single == parallel
