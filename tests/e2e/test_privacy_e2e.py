"""Privacy end to end on real Kafka and Redis: deletion through the API and consent revocation.

API DELETE -> the store forgets the user at once -> `UserDeleted` reaches the flow -> a late
event of the user does not bring anything back. A `ConsentChanged` revoking `tasks` removes
every agent's parameters and snippet and the API stops serving them.
"""

from __future__ import annotations

from typing import Any

import httpx
import redis

from connectors.codec import from_json
from connectors.kafka import EventProducer
from serving.app import create_app
from serving.settings import Settings
from tests.cli import oo_features
from tests.fixtures_services import service_env
from tests.orchestrator_peer import ApiServer

TOKEN = "e2e-token-0123456789abcdef"


def done(event_id: str, user_id: str, when: str) -> Any:
    return from_json(
        f'{{"eventId":"{event_id}","userId":"{user_id}","occurredAt":"{when}","utcOffsetMinutes":60,'
        f'"taskCompleted":{{"taskId":"{event_id}","projectId":"p1","dueAt":"2026-05-01T00:00:00Z"}}}}'
    )


def history(user_id: str) -> list[Any]:
    return [
        done(f"{user_id}-{d}-{h}", user_id, f"2026-05-{d:02d}T{h:02d}:15:00Z")
        for d in range(1, 21)
        for h in (8, 9, 14)
    ]


def run_flow(env: dict[str, str]) -> None:
    oo_features("flow", "--stop-at-end", env=env, timeout=300)


def test_deletion_and_consent_revocation_end_to_end(
    services: Any, topic_prefix: str, key_prefix: str
) -> None:
    env = service_env(services, topic_prefix, key_prefix)
    producer = EventProducer(bootstrap=services.kafka_bootstrap, topic_prefix=topic_prefix)
    for event in history("gone") + history("private"):
        producer.publish(event)
    assert producer.flush(30).published == 120
    run_flow(env)

    settings = Settings(
        kafka_bootstrap=services.kafka_bootstrap,
        store_url=services.redis_url,
        topic_prefix=topic_prefix,
        key_prefix=key_prefix,
        api_token=TOKEN,
    )
    client = redis.Redis.from_url(services.redis_url)
    with ApiServer(create_app(settings)) as api:
        http = httpx.Client(
            base_url=api.url,
            headers={"Authorization": f"Bearer {TOKEN}"},
            trust_env=False,
            timeout=10,
        )
        assert set(http.get("/v1/users/gone/features").json()["agents"]) >= {
            "momentum",
            "time-of-day",
        }

        # Deletion: gone from the store at once, before the flow has seen anything.
        assert http.delete("/v1/users/gone").status_code == 202
        assert http.get("/v1/users/gone/features").status_code == 404
        assert http.post("/v1/recommend", json={"user_id": "gone"}).status_code == 404

        # A late event of the deleted user (older than the deletion) arrives after it.
        producer.publish(done("gone-late", "gone", "2026-05-20T10:00:00Z"))
        # Consent revoked for the other user.
        producer.publish(
            from_json(
                '{"eventId":"private-no","userId":"private","occurredAt":"2026-05-21T08:00:00Z",'
                '"consentChanged":{"consent":"tasks","granted":false}}'
            )
        )
        assert producer.flush(30).published == 2
        run_flow(env)

        keys = [k.decode() for k in client.scan_iter(match=f"{key_prefix}:*gone*")]
        assert keys and all(":tomb:" in k for k in keys), keys
        assert http.get("/v1/users/gone/features").status_code == 404

        features = http.get("/v1/users/private/features").json()
        assert features["agents"] == {}
        agent_keys = [
            k.decode() for k in client.scan_iter(match=f"{key_prefix}:{{private}}:agent:*")
        ]
        snippet_keys = [
            k.decode() for k in client.scan_iter(match=f"{key_prefix}:{{private}}:snippet:*")
        ]
        assert agent_keys == [] and snippet_keys == []
        tip = http.post("/v1/recommend", json={"user_id": "private"}).json()
        assert tip["tip"] is None
        http.close()
    producer.close()
