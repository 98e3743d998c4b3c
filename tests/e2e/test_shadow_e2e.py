"""Shadow versions end to end on real Kafka and Redis, and the agreement gate.

A test package (`tests/shadow_agents`, registered with `OO_AGENT_PACKAGES`) holds two shadows
of `momentum`: `momentum-14d` (a 14-day baseline) and `momentum-same` (identical). A generated
log goes through `produce` and the real `flow` into Redis; `oo-features serve` (a subprocess,
same registry) answers with a real orchestrator peer behind it. The shadows are folded and
stored, listed by `GET /v1/agents` with their stage, returned only with `include_shadow=true`,
and never reach a prompt or a tip. `agreement` (offline over the log, online over the store)
is below 100 % for the 14-day variant and exactly 100 % for the identical one, and both
readings agree with each other.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.store import open_store
from tests.cli import oo_features
from tests.orchestrator_peer import OrchestratorPeer
from tests.outage import free_port

USERS, DAYS, SEED = 60, 35, 4242
TOKEN = "shadow-e2e-token-0123456789abcdef"
SHADOWS = ("momentum-14d", "momentum-same")


@pytest.fixture(scope="module")
def deployed(services: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    import uuid

    tmp = tmp_path_factory.mktemp("shadow")
    log = tmp / "events.jsonl"
    oo_features(
        "generate", "--users", str(USERS), "--days", str(DAYS), "--seed", str(SEED),
        "--out", str(log),
    )  # fmt: skip
    run = uuid.uuid4().hex[:8]
    env = {
        "OO_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
        "OO_STORE_URL": services.redis_url,
        "OO_TOPIC_PREFIX": f"shadow{run}.",
        "OO_KEY_PREFIX": f"shadow{run}",
        "OO_AGENT_PACKAGES": "tests.shadow_agents",
    }
    oo_features("produce", str(log), env=env, timeout=300)
    oo_features("flow", "--stop-at-end", env=env, timeout=600)
    with OrchestratorPeer() as peer:
        port = free_port()
        api_env = {
            **env,
            "OO_PORT": str(port),
            "OO_API_TOKEN": TOKEN,
            "OO_ORCHESTRATOR_URL": peer.url,
        }
        import os

        server_log = tmp / "serve.log"
        with server_log.open("wb") as err_file:
            server = subprocess.Popen(
                [sys.executable, "-m", "oo_features.cli", "serve"],
                env={**os.environ, **api_env},
                stdout=subprocess.DEVNULL,
                stderr=err_file,
            )
        http = httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            trust_env=False,
            timeout=60,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if http.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    err = server_log.read_text(errors="replace")
                    raise AssertionError(f"oo-features serve did not start:\n{err[-3000:]}")
                time.sleep(0.2)
            yield {"env": env, "log": log, "http": http, "peer": peer}
        finally:
            http.close()
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(30)
    from tests.fixtures_services import _delete_keys, _delete_topics

    _delete_keys(services.redis_url, env["OO_KEY_PREFIX"])
    _delete_topics(services.kafka_bootstrap, env["OO_TOPIC_PREFIX"])


def _user_ids(deployed: dict[str, Any]) -> list[str]:
    store = open_store(deployed["env"]["OO_STORE_URL"], key_prefix=deployed["env"]["OO_KEY_PREFIX"])
    try:
        return sorted(store.user_ids())
    finally:
        store.close()


def test_shadows_are_folded_and_stored(deployed: dict[str, Any]) -> None:
    env = deployed["env"]
    store = open_store(env["OO_STORE_URL"], key_prefix=env["OO_KEY_PREFIX"])
    try:
        users = [store.read_user(u) for u in sorted(store.user_ids())]
    finally:
        store.close()
    with_momentum = [u for u in users if u is not None and "momentum" in u.agents]
    assert len(with_momentum) >= USERS // 2
    for user in with_momentum:
        assert set(SHADOWS) <= set(user.agents), user.user_id
        same = user.agents["momentum-same"]
        assert same.params == user.agents["momentum"].params


def test_agents_lists_the_stage(deployed: dict[str, Any]) -> None:
    agents = {a["id"]: a for a in deployed["http"].get("/v1/agents").json()["agents"]}
    assert agents["momentum-14d"]["stage"] == "shadow"
    assert agents["momentum-14d"]["shadows"] == "momentum"
    assert agents["momentum"]["stage"] == "live" and agents["momentum"]["shadows"] is None
    assert {a["stage"] for i, a in agents.items() if i not in SHADOWS} == {"live"}


def test_shadows_only_when_asked(deployed: dict[str, Any]) -> None:
    http = deployed["http"]
    seen = 0
    for user_id in _user_ids(deployed)[:20]:
        plain = http.get(f"/v1/users/{user_id}/features").json()["agents"]
        asked = http.get(f"/v1/users/{user_id}/features?include_shadow=true").json()["agents"]
        assert not set(SHADOWS) & set(plain), user_id
        if "momentum" in plain:
            seen += 1
            assert set(SHADOWS) <= set(asked)
            assert set(asked) - set(SHADOWS) == set(plain)
    assert seen > 0


def test_shadows_never_reach_the_orchestrator_or_a_tip(deployed: dict[str, Any]) -> None:
    http, peer = deployed["http"], deployed["peer"]
    peer.reset()
    tips = differing = 0
    for user_id in _user_ids(deployed)[:30]:
        asked = http.get(f"/v1/users/{user_id}/features?include_shadow=true").json()["agents"]
        live_text = (asked.get("momentum", {}).get("snippet") or {}).get("text")
        shadow_text = (asked.get("momentum-14d", {}).get("snippet") or {}).get("text")
        before = peer.requests
        answer = http.post("/v1/recommend", json={"user_id": user_id}).json()
        assert not set(SHADOWS) & set(answer.get("agents", [])), answer
        tips += answer.get("tip") is not None
        for body in peer.bodies[before:]:
            text = json.dumps(body)
            assert not any(s in text for s in SHADOWS), text
            if live_text and shadow_text and shadow_text != live_text:
                differing += 1
                assert shadow_text not in text and live_text in text, text
    assert tips > 0 and peer.requests > 0
    assert differing > 0, "no user whose shadow snippet differs: the text check never ran"


def _offline(deployed: dict[str, Any], shadow: str) -> dict[str, Any]:
    result = oo_features(
        "agreement", str(deployed["log"]), "--agent", shadow, "--at", "3", "--json",
        env={"OO_AGENT_PACKAGES": "tests.shadow_agents"},
    )  # fmt: skip
    return json.loads(result.stdout)


def test_agreement_below_100_for_a_changed_shadow_and_exactly_100_for_the_same(
    deployed: dict[str, Any],
) -> None:
    http = deployed["http"]
    changed, same = _offline(deployed, "momentum-14d"), _offline(deployed, "momentum-same")
    assert len(changed["points"]) == 4 and changed["points"][-1]["users"] > 0
    end = changed["points"][-1]["params"]
    assert min(p["share"] for p in end.values()) < 1.0
    assert end["baseline_completions_per_day"]["largest"], "largest differences are named"
    for point in same["points"]:
        assert all(p["share"] == 1.0 for p in point["params"].values())
        assert all(p["largest"] == [] for p in point["params"].values())

    online = http.get("/v1/agents/momentum-14d/agreement").json()
    online_same = http.get("/v1/agents/momentum-same/agreement").json()
    assert online["users"] > 0 and not online["truncated"]
    assert min(p["share"] for p in online["params"].values()) < 1.0
    assert all(p["share"] == 1.0 for p in online_same["params"].values())
    # Offline over the log and online over the store read the same users the same way.
    counts = {k: (p["compared"], p["agreeing"]) for k, p in online["params"].items()}
    assert counts == {k: (p["compared"], p["agreeing"]) for k, p in end.items()}

    assert http.get("/v1/agents/momentum/agreement").status_code == 409
    assert http.get("/v1/agents/nobody/agreement").status_code == 404


def test_agreement_names_a_wrong_agent(deployed: dict[str, Any], tmp_path: Path) -> None:
    result = oo_features("agreement", str(deployed["log"]), "--agent", "momentum", check=False)
    assert result.returncode == 2 and "'momentum' is live, not a shadow" in result.stderr
    result = oo_features("agreement", str(tmp_path / "none.jsonl"), "--agent", "x", check=False)
    assert result.returncode == 2 and "'x' is not registered" in result.stderr
