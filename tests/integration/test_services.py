"""`oo-features services`: the local Kafka and Redis start, answer, report and stop."""

from __future__ import annotations

import argparse
import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from oo_features import services as oo_services
from oo_features.commands import services as services_command
from tests.fixtures_services import Services

if TYPE_CHECKING:
    import redis


def _cli(action: str, state_dir: Path | None = None) -> int:
    args = argparse.Namespace(
        action=action, state_dir=str(state_dir) if state_dir else None, timeout=90.0, json=False
    )
    return services_command.run(args)


def test_up_is_idempotent(services: Services) -> None:
    before = oo_services.running_endpoints(services.state_dir)
    again = oo_services.up(services.state_dir)

    assert before is not None
    assert again == before  # same addresses, same pids: nothing was restarted


def test_status_reports_both(services: Services, capsys: pytest.CaptureFixture[str]) -> None:
    statuses = {s.name: s for s in oo_services.status(services.state_dir)}

    assert set(statuses) == {"kafka", "redis"}
    assert all(s.running and s.healthy for s in statuses.values()), statuses
    assert statuses["kafka"].address == services.kafka_bootstrap
    assert statuses["redis"].address == services.redis_url

    assert _cli("status", services.state_dir) == 0
    out = capsys.readouterr().out
    assert services.kafka_bootstrap in out
    assert services.redis_url in out

    recorded = json.loads((services.state_dir / "services.json").read_text())
    assert recorded["kafka_bootstrap"] == services.kafka_bootstrap
    assert recorded["redis_url"] == services.redis_url


def test_kafka_round_trips_one_message(
    services: Services, kafka_admin: AdminClient, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}roundtrip"
    assert kafka_admin.list_topics(timeout=10).brokers
    for future in kafka_admin.create_topics([NewTopic(topic, 1, 1)]).values():
        future.result(timeout=30)

    producer = Producer({"bootstrap.servers": services.kafka_bootstrap, "acks": "all"})
    producer.produce(topic, key=b"user-1", value=b"hello")
    assert producer.flush(30) == 0, "the message was not delivered within 30 s"

    consumer = Consumer(
        {
            "bootstrap.servers": services.kafka_bootstrap,
            "group.id": f"{topic_prefix}group",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 30
        message = None
        while message is None and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error():
                pytest.fail(f"consumer error on {topic}: {message.error()}")
    finally:
        consumer.close()

    assert message is not None, f"nothing consumed from {topic} within 30 s"
    assert (message.key(), message.value()) == (b"user-1", b"hello")


def test_redis_answers(redis_client: redis.Redis[bytes], key_prefix: str) -> None:
    assert redis_client.ping() is True
    redis_client.set(f"{key_prefix}:probe", b"1", ex=60)
    assert redis_client.get(f"{key_prefix}:probe") == b"1"


def test_status_of_an_empty_state_dir_is_down(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert not any(s.running or s.healthy for s in oo_services.status(tmp_path))
    assert _cli("status", tmp_path) == 1
    assert "down" in capsys.readouterr().out


def test_down_never_kills_a_process_it_did_not_start(tmp_path: Path) -> None:
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        state = oo_services.ServicesState(
            kafka_port=1, controller_port=2, redis_port=3, kafka_pid=stranger.pid
        )
        state.redis_pid = stranger.pid
        (tmp_path / "services.json").write_text(json.dumps(state.to_json()))

        oo_services.down(tmp_path, timeout_s=1)

        assert stranger.poll() is None, "down killed a pid whose command line is not ours"
        recorded = json.loads((tmp_path / "services.json").read_text())
        assert recorded["kafka_pid"] is None and recorded["redis_pid"] is None
    finally:
        stranger.kill()
        stranger.wait()


def test_up_status_down_in_a_separate_state_dir(services: Services, tmp_path: Path) -> None:
    # The session's services hold the default ports, so this one must pick free ones.
    state_dir = tmp_path / f"svc-{uuid.uuid4().hex[:6]}"
    endpoints = oo_services.up(state_dir)
    try:
        assert endpoints.kafka_bootstrap != services.kafka_bootstrap
        assert endpoints.redis_url != services.redis_url
        assert all(s.running and s.healthy for s in oo_services.status(state_dir))
    finally:
        oo_services.down(state_dir)

    assert not any(s.running or s.healthy for s in oo_services.status(state_dir))
    # The session's own services are untouched.
    assert oo_services.running_endpoints(services.state_dir) is not None


def test_two_state_dirs_started_at_once_get_ports_of_their_own(
    services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two `up`s in two fresh state folders at the same moment (say `make test` and `make
    chaos` started together): both see the same free ports before either broker binds them.
    Each must still come up, on ports of its own. The ports both would try first are free
    ports chosen here (the session's services hold the defaults)."""
    import threading

    from oo_features.services import single
    from oo_features.services.processes import _any_free_port
    from oo_features.services.state import ServicesState

    first = _any_free_port(set())
    ports = (first, _any_free_port({first}))
    redis_port = _any_free_port(set(ports))
    monkeypatch.setattr(
        single,
        "_initial_state",
        lambda: ServicesState(kafka_port=ports[0], controller_port=ports[1], redis_port=redis_port),
    )
    dirs = [tmp_path / f"race-{n}" for n in (1, 2)]
    results: dict[int, object] = {}

    def start(n: int) -> None:
        try:
            results[n] = oo_services.up(dirs[n])
        except Exception as exc:  # reported below, with which one failed
            results[n] = exc

    threads = [threading.Thread(target=start, args=(n,)) for n in (0, 1)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(240)
        failed = {n: r for n, r in results.items() if isinstance(r, Exception)}
        assert not failed, failed
        one, two = (results[0], results[1])
        assert one.kafka_bootstrap != two.kafka_bootstrap  # type: ignore[attr-defined]
        assert one.redis_url != two.redis_url  # type: ignore[attr-defined]
        for state_dir in dirs:
            assert all(s.running and s.healthy for s in oo_services.status(state_dir))
    finally:
        for state_dir in dirs:
            oo_services.down(state_dir)
