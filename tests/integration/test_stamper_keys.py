"""The ingestion stamper stamps only valid user ids (issue 11, "Freshness").

Real Kafka and Redis, the API's own stamper: messages with junk keys (markup, 20 kB, not
UTF-8, none) never become users in `/v1/freshness`, and are counted by reason in
`oo_stamper_skipped_keys_total`.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from confluent_kafka import Producer

from connectors import topics
from connectors.codec import from_json
from connectors.kafka import EventProducer
from serving.app import create_app
from serving.settings import Settings
from tests.fixtures_services import Services
from tests.orchestrator_peer import ApiServer

pytestmark = pytest.mark.integration

TOKEN = "stamper-keys-token-0123456789"
JUNK_KEYS: list[bytes | None] = [
    b"<script>alert(1)</script>",
    b"k" * 20_000,
    b"user with spaces",
    b"\xff\xfe",
    None,
]


def _wait_for(what: str, check: Callable[[], Any], *, timeout_s: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}; last: {last!r}")


def _event(user_id: str) -> Any:
    when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    event_id = uuid.uuid4().hex
    return from_json(
        f'{{"eventId":"{event_id}","userId":"{user_id}","occurredAt":"{when}",'
        f'"taskCompleted":{{"taskId":"{event_id}","projectId":"p1"}}}}'
    )


def _skipped(metrics_text: str) -> dict[str, float]:
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(
            r'^oo_stamper_skipped_keys_total\{reason="([a-z_0-9]+)"\} (\S+)$', metrics_text, re.M
        )
    }


def test_junk_keys_are_never_stamped_and_are_counted(
    services: Services, topic_prefix: str, key_prefix: str
) -> None:
    settings = Settings(
        kafka_bootstrap=services.kafka_bootstrap,
        store_url=services.redis_url,
        topic_prefix=topic_prefix,
        key_prefix=key_prefix,
        api_token=TOKEN,
        freshness_check_interval_s=1.0,
    )
    app = create_app(settings)
    raw = Producer({"bootstrap.servers": services.kafka_bootstrap})
    events = EventProducer(bootstrap=services.kafka_bootstrap, topic_prefix=topic_prefix)
    try:
        with (
            ApiServer(app) as api,
            httpx.Client(
                base_url=api.url, headers={"Authorization": f"Bearer {TOKEN}"}, trust_env=False
            ) as http,
        ):
            assert app.state.stamper.wait_assigned(60), "the ingestion stamper got no partitions"

            # A consumer that starts at the end fixes its position at its first fetch: wait
            # until it has stamped a probe, so none of the junk below lands before it.
            # A probe published before that point is skipped: publish one a second until one
            # is stamped.
            def probe_stamped() -> bool:
                events.publish(_event("u-probe"))
                assert events.flush(30).ok
                time.sleep(0.75)
                return bool(http.get("/v1/freshness").json()["pending_users"] >= 1)

            _wait_for("a probe to be stamped", probe_stamped)
            for _ in range(20):
                for key in JUNK_KEYS:
                    raw.produce(topic_prefix + topics.SIGNALS, key=key, value=b"not an event")
            assert raw.flush(30) == 0
            events.publish(_event("u-valid"))
            assert events.flush(30).ok

            expected = {"invalid_user_id": 60.0, "not_utf8": 20.0, "no_key": 20.0}
            _wait_for(
                "the stamper to skip every junk key",
                lambda: _skipped(http.get("/metrics").text) == expected or None,
            )
            body = _wait_for(
                "the valid user to be stamped",
                lambda: (b := http.get("/v1/freshness").json())["pending_users"] >= 2 and b,
            )
            assert app.state.stamper.status.skipped_keys == {
                "invalid_user_id": 60,
                "not_utf8": 20,
                "no_key": 20,
            }
            assert body["pending_users"] == 2
            for agent in body["agents"].values():
                assert agent["active_users"] == 2
                assert sorted(w["user_id"] for w in agent["worst"]) == ["u-probe", "u-valid"]
    finally:
        events.close()
