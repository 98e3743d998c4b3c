"""The tip ledger end to end on real Kafka, with the store on Redis and on SQLite.

Events go through Kafka and the real flow into the store; the API (uvicorn) asks a real
OpenAI-compatible peer for tips; reactions come through `POST /v1/feedback`. Then the
`oo-features ledger export` lines must carry exactly what each prompt was built from (checked
against the prompt the peer received and the features the store held), the fallback's
reason and the reactions; `DELETE /v1/users/{id}` removes that user's lines at once; a
`ConsentChanged` revoking `tasks` (through the flow) removes the values of every agent that
needs it.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.codec import from_json
from connectors.kafka import EventProducer
from connectors.store import open_store
from serving.app import create_app
from serving.prompt import PROMPT_VERSION
from serving.settings import Settings
from tests.cli import oo_features
from tests.e2e.test_privacy_e2e import history
from tests.fixtures_services import service_env
from tests.orchestrator_peer import ApiServer, OrchestratorPeer

TOKEN = "e2e-ledger-token-0123456789"
ANSWER = {"text": "Finish what is overdue, then rest.", "kind": "todo"}
SIGNAL = re.compile(r"^- \[([^\]]+)\] (.*)$", re.MULTILINE)


def wait_for(read: Any, ready: Any, *, timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = read()
        if ready(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


@pytest.mark.parametrize("backend", ["redis", "sqlite", "redis-split"])
def test_the_ledger_carries_what_each_tip_was_built_from(
    services: Any,
    topic_prefix: str,
    key_prefix: str,
    tmp_path: Path,
    backend: str,
    request: pytest.FixtureRequest,
) -> None:
    """`redis-split`: the ledger on a Redis of its own (ADR 0052), which the API records into
    and the flow's deletions and revocations reach."""
    store_url = f"sqlite:///{tmp_path}/f.db" if backend == "sqlite" else services.redis_url
    ledger_url = request.getfixturevalue("ledger_redis") if backend == "redis-split" else None
    env = service_env(services, topic_prefix, key_prefix, store_url=store_url)
    if ledger_url is not None:
        env["OO_LEDGER_STORE_URL"] = ledger_url
    producer = EventProducer(bootstrap=services.kafka_bootstrap, topic_prefix=topic_prefix)
    for event in history("keep") + history("gone") + history("private"):
        producer.publish(event)
    assert producer.flush(30).published == 180
    oo_features("flow", "--stop-at-end", env=env, timeout=300)

    settings = Settings(
        kafka_bootstrap=services.kafka_bootstrap,
        store_url=store_url,
        topic_prefix=topic_prefix,
        key_prefix=key_prefix,
        api_token=TOKEN,
        orchestrator_url=None,
        ledger_store_url=ledger_url,
    )
    store = open_store(store_url, key_prefix=key_prefix, ledger_url=ledger_url)

    def lines() -> list[dict[str, Any]]:
        now = time.time_ns() // 1_000_000
        return list(store.ledger_export(since_ms=None, now_ms=now, retention_ms=86_400_000))

    with (
        OrchestratorPeer(answer=ANSWER) as peer,
        ApiServer(create_app(settings.model_copy(update={"orchestrator_url": peer.url}))) as api,
        httpx.Client(
            base_url=api.url, headers={"Authorization": f"Bearer {TOKEN}"}, trust_env=False
        ) as http,
    ):
        features = {u: http.get(f"/v1/users/{u}/features").json() for u in ("keep", "private")}
        tips = {}
        for user_id in ("keep", "gone", "private"):
            tips[user_id] = http.post("/v1/recommend", json={"user_id": user_id}).json()
            assert tips[user_id]["fallback"] is False, tips[user_id]
        prompts = [body["messages"][0]["content"] for body in peer.bodies]
        peer.mode = "error"
        fallback = http.post("/v1/recommend", json={"user_id": "keep"}).json()
        assert fallback["fallback_reason"] == "http_5xx"
        keep_tip = tips["keep"]["tip"]["tip_id"]
        for reaction in ("like", "done"):
            answer = http.post(
                "/v1/feedback",
                json={"user_id": "keep", "tip_id": keep_tip, "reaction": reaction},
            )
            assert answer.status_code == 202

        got = wait_for(
            lines,
            lambda ls: len(ls) == 4 and any(len(x["reactions"]) == 2 for x in ls),
        )
        by_tip = {line["tip_id"]: line for line in got}
        assert set(by_tip) == {t["tip"]["tip_id"] for t in tips.values()} | {
            fallback["tip"]["tip_id"]
        }

        # Each orchestrator tip: exactly the prompt's signals, in order, with the parameters
        # and versions the store held when it was served.
        for (user_id, tip), prompt in zip(tips.items(), prompts, strict=True):
            line = by_tip[tip["tip"]["tip_id"]]
            assert line["user_id"] == user_id
            assert (line["text"], line["kind"]) == (ANSWER["text"], ANSWER["kind"])
            assert (line["prompt_version"], line["model"]) == (PROMPT_VERSION, "tip-generator")
            assert line["fallback"] is False and line["fallback_reason"] is None
            assert line["orchestrator_latency_ms"] > 0
            sent = SIGNAL.findall(prompt)
            assert [(a["agent_id"], a["snippet"]) for a in line["agents"]] == sent
            assert [a["agent_id"] for a in line["agents"]] == tip["agents"]
            if user_id in features:
                stored = features[user_id]["agents"]
                for a in line["agents"]:
                    assert a["version"] == stored[a["agent_id"]]["version"]
                    assert a["params"] == stored[a["agent_id"]]["params"]
        keep = by_tip[keep_tip]
        assert [r["reaction"] for r in keep["reactions"]] == ["like", "done"]

        # The fallback: its reason, its one agent, and the tip text (that agent's snippet).
        fb = by_tip[fallback["tip"]["tip_id"]]
        assert (fb["fallback"], fb["fallback_reason"]) == (True, "http_5xx")
        assert [a["agent_id"] for a in fb["agents"]] == fallback["agents"]
        assert fb["text"] == fallback["tip"]["text"] == fb["agents"][0]["snippet"]

        # Deletion: the user's lines are gone at once (no waiting on anything).
        assert http.delete("/v1/users/gone").status_code == 202
        assert "gone" not in {line["user_id"] for line in lines()}

        # Consent revocation through the flow: every agent that needs `tasks` loses its values.
        producer.publish(
            from_json(
                '{"eventId":"private-no","userId":"private","occurredAt":"2026-05-21T08:00:00Z",'
                '"consentChanged":{"consent":"tasks","granted":false}}'
            )
        )
        assert producer.flush(30).published == 1
        oo_features("flow", "--stop-at-end", env=env, timeout=300)

    out = tmp_path / "ledger.jsonl"
    oo_features("ledger", "export", "--out", str(out), env=env)
    exported = [json.loads(x) for x in out.read_text().splitlines()]
    assert {line["user_id"] for line in exported} == {"keep", "private"}
    [private] = [line for line in exported if line["user_id"] == "private"]
    assert private["agents"] and all(
        a["removed"] == "consent" and a["params"] is None and a["snippet"] is None
        for a in private["agents"]
    )
    assert [line for line in exported if line["user_id"] == "keep"] == [
        line for line in lines() if line["user_id"] == "keep"
    ]
    since = oo_features("ledger", "export", "--since", "2999-01-01T00:00:00Z", env=env)
    assert since.stdout == ""
    store.close()
    producer.close()
