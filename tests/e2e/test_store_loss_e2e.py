"""A store that lost its data is noticed and refilled; a deleted user is never served again.

Real Kafka and Redis (ADR 0008). A wipe is every key of the test's key prefix deleted, the
identity marker included: the engine reads and writes nothing outside its prefix, so for it
this is the same as FLUSHALL on a private server, without disturbing the other tests that
share the Redis.

- deletion: delete a user through the API, wipe the store, replay the log from the beginning
  with a fresh flow in tail mode while polling the user through the API: never served;
- wipe while the flow is idle and caught up, and wipe while it is processing a backlog: the
  flow notices, exits 75, `/ready` says the store lost its data, the documented restart
  refills, and the final store equals an uninterrupted run of the same log.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.codec import from_json
from connectors.kafka import EventProducer
from connectors.store import open_store
from oo_features.generate import generate_lines
from oo_features.services import delete_keys
from serving.app import create_app
from serving.settings import Settings
from tests.cli import oo_features
from tests.fixtures_services import service_env
from tests.orchestrator_peer import ApiServer

DEADLINE_S = 240.0
EXIT_STORE_LOST = 75  # oo_features.commands.refill.EXIT_STORE_LOST, the documented exit code


def done(event_id: str, user_id: str, when: str) -> Any:
    return from_json(
        f'{{"eventId":"{event_id}","userId":"{user_id}","occurredAt":"{when}",'
        f'"utcOffsetMinutes":60,"taskCompleted":{{"taskId":"{event_id}","projectId":"p1",'
        '"dueAt":"2026-05-01T00:00:00Z"}}'
    )


def history(user_id: str) -> list[Any]:
    return [
        done(f"{user_id}-{d}-{h}", user_id, f"2026-05-{d:02d}T{h:02d}:15:00Z")
        for d in range(1, 21)
        for h in (8, 9, 14)
    ]


def publish(bootstrap: str, topic_prefix: str, events: list[Any]) -> None:
    producer = EventProducer(bootstrap=bootstrap, topic_prefix=topic_prefix)
    for event in events:
        producer.publish(event)
    assert producer.flush(60).published == len(events)
    producer.close()


def dump(store_url: str, key_prefix: str, user_ids: list[str]) -> dict[str, Any]:
    """What the store serves and keeps per user (parameters, snippets, feedback, deletion)."""
    store = open_store(store_url, key_prefix=key_prefix)
    out: dict[str, Any] = {}
    try:
        for user_id in user_ids:
            user = store.read_user(user_id)
            served = None
            if user is not None:
                served = (
                    {a: (s.params, s.snippet, s.event_time_ms) for a, s in user.agents.items()},
                    user.feedback,
                    user.consents,
                )
            out[user_id] = (served, store.tombstone(user_id))
    finally:
        store.close()
    return out


def users_with_data(store_url: str, key_prefix: str, user_ids: list[str]) -> int:
    return sum(1 for served, _ in dump(store_url, key_prefix, user_ids).values() if served)


def newest_written(store_url: str, key_prefix: str, user_ids: list[str]) -> int:
    """The newest event time the store holds for any user: how far the flow has come."""
    store = open_store(store_url, key_prefix=key_prefix)
    try:
        users = [store.read_user(u) for u in user_ids]
    finally:
        store.close()
    return max((u.newest_event_ms or 0 for u in users if u is not None), default=0)


@contextmanager
def tail_flow(env: dict[str, str], log: Path, *flags: str) -> Iterator[subprocess.Popen[bytes]]:
    """`oo-features flow FLAGS` in tail mode; stopped (SIGTERM, then SIGKILL) at the end."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "oo_features.cli", "flow", *flags],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_until(what: str, check: Any, proc: subprocess.Popen[bytes] | None, log: Path) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not check():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(
                f"flow exited {proc.returncode} {what}:\n{log.read_text()[-3000:]}"
            )
        assert time.monotonic() < deadline, (
            f"not {what} within {DEADLINE_S}s:\n{log.read_text()[-3000:]}"
        )
        time.sleep(0.2)


def test_a_deleted_user_is_never_served_during_a_replay_into_a_wiped_store(
    services: Any, topic_prefix: str, key_prefix: str, tmp_path: Path
) -> None:
    env = service_env(services, topic_prefix, key_prefix)
    others = [f"u{i:02d}" for i in range(30)]
    # The deleted user's history first, then many other events before its deletion: a replay
    # meets the deleted user's data long before the deletion event.
    publish(
        services.kafka_bootstrap,
        topic_prefix,
        history("gone") + [e for u in others for e in history(u)],
    )
    oo_features("flow", "--stop-at-end", env=env, timeout=300)
    settings = Settings(
        kafka_bootstrap=services.kafka_bootstrap,
        store_url=services.redis_url,
        topic_prefix=topic_prefix,
        key_prefix=key_prefix,
    )
    log = tmp_path / "flow.log"
    expected_newest = max(e.occurred_at.ToMilliseconds() for e in history(others[-1]))
    with ApiServer(create_app(settings)) as api:
        http = httpx.Client(base_url=api.url, trust_env=False, timeout=10)
        assert http.get("/v1/users/gone/features").status_code == 200
        assert http.delete("/v1/users/gone").status_code == 202
        assert delete_keys(services.redis_url, f"{key_prefix}:") > 0  # the store is wiped

        store = open_store(services.redis_url, key_prefix=key_prefix)
        served: list[int] = []
        polls = 0

        def caught_up() -> bool:
            users = [store.read_user(u) for u in others]
            return all(
                u is not None and u.newest_event_ms == expected_newest for u in users[-1:]
            ) and all(u is not None for u in users)

        # Small batches written at once: the replay writes every user as it goes.
        flags = ("--batch-size", "20", "--flush-interval", "0", "--catchup-flush-interval", "0")
        with tail_flow(env, log, *flags) as flow:
            deadline = time.monotonic() + DEADLINE_S
            done_at = None
            while done_at is None or time.monotonic() < done_at + 1.0:
                status = http.get("/v1/users/gone/features").status_code
                polls += 1
                if status != 404:
                    served.append(status)
                if done_at is None and polls % 25 == 0 and caught_up():
                    done_at = time.monotonic()
                assert flow.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, f"no catch-up:\n{log.read_text()[-3000:]}"
        store.close()
        http.close()
    assert polls > 50
    assert served == [], f"the deleted user was served {len(served)} times of {polls} polls"


def _run_wipe_case(
    services: Any, topic_prefix: str, key_prefix: str, tmp_path: Path, *, mid_processing: bool
) -> None:
    env = service_env(services, topic_prefix, key_prefix)
    lines = list(generate_lines(40 if mid_processing else 20, 12, 11))
    events = [from_json(line) for line in lines]
    user_ids = sorted({e.user_id for e in events})
    newest_s = max(e.occurred_at.seconds for e in events)
    late_at = datetime.fromtimestamp(newest_s + 60, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    late = done("late-1", user_ids[0], late_at)  # one new event after the wipe
    publish(services.kafka_bootstrap, topic_prefix, events)
    settings = Settings(
        kafka_bootstrap=services.kafka_bootstrap,
        store_url=services.redis_url,
        topic_prefix=topic_prefix,
        key_prefix=key_prefix,
    )
    log = tmp_path / "flow.log"
    flags = ["--recovery-dir", str(tmp_path / "recovery"), "--epoch-interval", "1"]
    if mid_processing:
        flags += ["--batch-size", "10", "--flush-interval", "0", "--catchup-flush-interval", "0"]
    with ApiServer(create_app(settings)) as api:
        http = httpx.Client(base_url=api.url, trust_env=False, timeout=10)
        assert http.get("/ready").status_code == 200
        with tail_flow(env, log, *flags) as flow:
            if mid_processing:
                wait_until(
                    "writing",
                    lambda: users_with_data(services.redis_url, key_prefix, user_ids) > 0,
                    flow,
                    log,
                )
                written = newest_written(services.redis_url, key_prefix, user_ids)
            else:
                # Caught up: every user of the log written, the flow idle.
                wait_until(
                    "caught up",
                    lambda: (
                        users_with_data(services.redis_url, key_prefix, user_ids) == len(user_ids)
                    ),
                    flow,
                    log,
                )
                time.sleep(1.0)
            delete_keys(services.redis_url, f"{key_prefix}:")  # the store is wiped
            ready = http.get("/ready")
            assert ready.status_code == 503, ready.text
            assert ready.json()["store"].startswith(("lost its data", "refilling")), ready.text
            metrics = http.get("/metrics").text
            assert "oo_store_lost_data 1.0" in metrics or "oo_store_refilling 1.0" in metrics
            try:
                code = flow.wait(timeout=60)
            except subprocess.TimeoutExpired:
                raise AssertionError(
                    f"the flow did not notice:\n{log.read_text()[-3000:]}"
                ) from None
            assert code == EXIT_STORE_LOST, log.read_text()[-3000:]
            assert "lost its data" in log.read_text()
            ready = http.get("/ready")
            assert ready.status_code == 503 and ready.json()["store"].startswith("refilling")
        if mid_processing:
            newest_ms = max(e.occurred_at.ToMilliseconds() for e in events)
            assert written < newest_ms, "the wipe came after the flow had finished"
        publish(services.kafka_bootstrap, topic_prefix, [late])

        # The reference: one uninterrupted run of the whole log into another prefix.
        reference_prefix = f"{key_prefix}ref"
        oo_features("flow", "--stop-at-end", env={**env, "OO_KEY_PREFIX": reference_prefix})
        expected = dump(services.redis_url, reference_prefix, user_ids)
        assert sum(1 for served, _ in expected.values() if served) > len(user_ids) // 2

        # The documented recovery: restart the flow with the same arguments.
        with tail_flow(env, log, *flags) as flow:
            wait_until(
                "refilled",
                lambda: dump(services.redis_url, key_prefix, user_ids) == expected,
                flow,
                log,
            )
            wait_until("ready", lambda: http.get("/ready").status_code == 200, flow, log)
            assert "refill: done" in log.read_text()
        assert dump(services.redis_url, key_prefix, user_ids) == expected
        http.close()


def test_wipe_while_idle_is_noticed_and_the_restart_refills(
    services: Any, topic_prefix: str, key_prefix: str, tmp_path: Path
) -> None:
    _run_wipe_case(services, topic_prefix, key_prefix, tmp_path, mid_processing=False)


def test_wipe_while_processing_is_noticed_and_the_restart_refills(
    services: Any, topic_prefix: str, key_prefix: str, tmp_path: Path
) -> None:
    _run_wipe_case(services, topic_prefix, key_prefix, tmp_path, mid_processing=True)


def test_refill_command_rewrites_a_wiped_store_with_its_tombstones(
    services: Any, topic_prefix: str, key_prefix: str
) -> None:
    from connectors.tombstones import read_tombstones
    from serving.events import user_deleted

    env = service_env(services, topic_prefix, key_prefix)
    events = [from_json(line) for line in generate_lines(12, 8, 3)]
    user_ids = sorted({e.user_id for e in events})
    # A deletion that reaches the flow as an event (not through the API).
    deleted_at = max(e.occurred_at.ToMilliseconds() for e in events) + 60_000
    publish(
        services.kafka_bootstrap, topic_prefix, [*events, user_deleted(user_ids[1], deleted_at)]
    )
    oo_features("flow", "--stop-at-end", env=env)
    expected = dump(services.redis_url, key_prefix, user_ids)
    assert expected[user_ids[1]] == (None, deleted_at)
    # The flow made that deletion durable in the tombstone topic.
    tombstones = read_tombstones(services.kafka_bootstrap, topic_prefix=topic_prefix)
    assert tombstones == {user_ids[1]: deleted_at}

    delete_keys(services.redis_url, f"{key_prefix}:")  # the store is wiped
    assert users_with_data(services.redis_url, key_prefix, user_ids) == 0

    result = oo_features("refill", env=env)

    assert "refill: done" in result.stderr
    assert dump(services.redis_url, key_prefix, user_ids) == expected
    store = open_store(services.redis_url, key_prefix=key_prefix)
    marker = store.identity()
    store.close()
    assert marker is not None and marker.state == "ready"


def test_file_replays_restore_the_durable_tombstones_first(
    services: Any, topic_prefix: str, key_prefix: str, tmp_path: Path
) -> None:
    from connectors.codec import to_json
    from connectors.tombstones import TombstoneLog

    # A deletion made through the API lives in the tombstone topic, not in the file.
    deleted_at = max(e.occurred_at.ToMilliseconds() for e in history("gone")) + 1
    tombstones = TombstoneLog(services.kafka_bootstrap, topic_prefix=topic_prefix)
    tombstones.publish("gone", deleted_at)
    tombstones.close()
    log = tmp_path / "log.jsonl"
    log.write_text("".join(to_json(e) + "\n" for e in history("gone") + history("kept")))
    env = {
        "OO_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
        "OO_STORE_URL": services.redis_url,
        "OO_TOPIC_PREFIX": topic_prefix,
    }

    for prefix, command in ((f"{key_prefix}b", "backfill"), (f"{key_prefix}f", "flow")):
        args = [command, str(log)] if command == "backfill" else [command, "--from", str(log)]
        oo_features(*args, env={**env, "OO_KEY_PREFIX": prefix})
        got = dump(services.redis_url, prefix, ["gone", "kept"])
        assert got["gone"] == (None, deleted_at), command
        assert got["kept"][0] is not None, command


def _recovered_run(
    services: Any, topic_prefix: str, key_prefix: str, tmp_path: Path
) -> tuple[dict[str, str], tuple[str, ...], list[str], dict[str, Any]]:
    """A small log run once with a recovery directory: (env, flow flags, users, store dump)."""
    env = service_env(services, topic_prefix, key_prefix)
    events = [from_json(line) for line in generate_lines(8, 6, 5)]
    user_ids = sorted({e.user_id for e in events})
    publish(services.kafka_bootstrap, topic_prefix, events)
    flags = ("flow", "--stop-at-end", "--recovery-dir", str(tmp_path / "recovery"))
    oo_features(*flags, env=env)
    expected = dump(services.redis_url, key_prefix, user_ids)
    assert sum(1 for served, _ in expected.values() if served) > len(user_ids) // 2
    return env, flags, user_ids, expected


def test_a_flow_restarted_on_a_store_wiped_while_it_was_down_refills(
    services: Any, topic_prefix: str, key_prefix: str, tmp_path: Path
) -> None:
    env, flags, user_ids, expected = _recovered_run(services, topic_prefix, key_prefix, tmp_path)

    # Wiped while the flow was down: the recovery state remembers the store it wrote to.
    delete_keys(services.redis_url, f"{key_prefix}:")
    again = oo_features(*flags, env=env)

    assert "lost its data: no identity marker" in again.stderr
    assert dump(services.redis_url, key_prefix, user_ids) == expected


@pytest.mark.chaos
def test_a_flow_restarted_on_a_replaced_store_refills(
    services: Any, topic_prefix: str, key_prefix: str, tmp_path: Path
) -> None:
    env, flags, user_ids, expected = _recovered_run(services, topic_prefix, key_prefix, tmp_path)

    # Wiped, then an API restarted on it gave it a new marker: another store for the flow.
    delete_keys(services.redis_url, f"{key_prefix}:")
    store = open_store(services.redis_url, key_prefix=key_prefix)
    store.create_identity()
    store.close()
    again = oo_features(*flags, env=env)

    assert "was replaced" in again.stderr
    assert dump(services.redis_url, key_prefix, user_ids) == expected
