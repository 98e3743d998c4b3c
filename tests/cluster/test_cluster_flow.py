"""The engine on the secured cluster, through settings alone: produce -> flow -> store -> API.

Every client (the `produce` CLI, the flow's sources and dead-letter sink, the API) reaches the
three SASL_SSL brokers through `OO_KAFKA_BOOTSTRAP` and `OO_KAFKA_PROPERTIES_FILE` only. The
store is the single Redis of the `services` fixture for the broker kill, and the local Redis
Cluster (3 masters, 3 replicas) for the end-to-end equality: the whole cluster profile.

- A broker killed with `kill -9` while `produce` publishes and the flow reads, then started
  again: `produce` finishes with every event acknowledged, every acknowledged event is in the
  topics, the flow never stops, and the store equals the reference (an undisturbed run).
- The end-to-end equality: a generated log with every kind of trouble, produced, folded by
  the flow in 2 processes, equals the numpy reference, and the API serves it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka.admin import AdminClient

from connectors import topics
from connectors.codec import to_json
from oo_features.generate import generate_lines
from oo_features.services import cluster_admin, kafka_cluster
from serving.app import create_app
from serving.settings import Settings
from tests.cli import oo_features
from tests.cluster.conftest import RunningCluster
from tests.compare import view_differences
from tests.e2e.test_flow_e2e import reborn_users, stored_view, valid_events
from tests.e2e.test_outage_e2e import FlowRun, wait_for, wait_for_reference, written_users
from tests.orchestrator_peer import ApiServer
from tests.outage import topic_event_ids
from tests.reference import reference_features

pytestmark = [pytest.mark.cluster, pytest.mark.integration]

USERS, DAYS, SEED = 60, 10, 20261203


def _env(running: RunningCluster, store_url: str, prefix: str) -> dict[str, str]:
    return {
        "OO_KAFKA_BOOTSTRAP": running.cluster.bootstrap,
        "OO_KAFKA_PROPERTIES_FILE": str(running.cluster.properties_file),
        "OO_STORE_URL": store_url,
        "OO_TOPIC_PREFIX": prefix,
        "OO_KEY_PREFIX": prefix.rstrip("."),
    }


def test_a_broker_killed_during_produce_and_flow_loses_nothing_and_the_flow_goes_on(
    kafka_cluster_running: RunningCluster,
    services: Any,
    cluster_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from connectors.codec import from_json

    running = kafka_cluster_running
    config = running.config()
    events = [from_json(line) for line in generate_lines(USERS, DAYS, SEED)]
    lines = [to_json(event) for event in events]
    half = len(lines) // 2
    env = _env(running, services.redis_url, cluster_prefix)
    for name, value in env.items():  # FlowRun and produce inherit this environment
        monkeypatch.setenv(name, value)
    cluster_admin.create_engine_topics(config, prefix=cluster_prefix, partitions=4)
    flow = FlowRun(
        tmp_path, bootstrap=env["OO_KAFKA_BOOTSTRAP"], store_url=services.redis_url,
        prefix=cluster_prefix,
    )  # fmt: skip
    try:
        with (
            (tmp_path / "produce.out").open("wb") as out,
            (tmp_path / "produce.err").open("wb") as err,
        ):
            produce = subprocess.Popen(
                [sys.executable, "-m", "oo_features.cli", "produce", "-", "--timeout", "60",
                 "--rejects", str(tmp_path / "rejects.jsonl"), "--no-progress"],
                stdin=subprocess.PIPE, stdout=out, stderr=err, cwd=tmp_path,
                env={**os.environ, **env},
            )  # fmt: skip
        assert produce.stdin is not None
        produce.stdin.write(("\n".join(lines[:half]) + "\n").encode())
        produce.stdin.flush()
        wait_for(
            "the flow writing the first events",
            lambda: written_users(services.redis_url, flow.key_prefix) > 0,
            timeout_s=180,
            alive=flow.process,
        )
        # The partition leader of the signals topic's first partition: the broker that matters.
        before = kafka_cluster.running(running.root)
        assert before is not None
        metadata = AdminClient(config).list_topics(cluster_prefix + topics.SIGNALS, timeout=30)
        leader = metadata.topics[cluster_prefix + topics.SIGNALS].partitions[0].leader
        os.kill(int(before.pids[leader]), signal.SIGKILL)  # type: ignore[arg-type]
        produce.stdin.write(("\n".join(lines[half:]) + "\n").encode())
        produce.stdin.close()
        time.sleep(3)
        assert flow.process.poll() is None, f"the flow exited:\n{flow.log()}"
        after = kafka_cluster.up(running.root)  # starts exactly the killed broker again
        assert after.pids[leader] != before.pids[leader]
        assert {n: p for n, p in after.pids.items() if n != leader} == {
            n: p for n, p in before.pids.items() if n != leader
        }
        assert produce.wait(300) == 0, (tmp_path / "produce.err").read_text()[-3000:]
        stdout = (tmp_path / "produce.out").read_text()
        published = int(re.search(r"published (\d+)", stdout).group(1))  # type: ignore[union-attr]
        assert published == len(lines), stdout
        # Nothing acknowledged is lost (idempotent producer: nothing twice either).
        in_topic = topic_event_ids(config, cluster_prefix)
        assert sorted(in_topic) == sorted(event.event_id for event in events)
        wait_for_reference(services.redis_url, flow, events, timeout_s=300)
        assert flow.process.poll() is None, "the flow stopped"
    finally:
        flow.stop()
        from oo_features.services import delete_keys

        delete_keys(services.redis_url, flow.key_prefix + ":")


def test_generated_log_through_produce_and_a_two_process_flow_equals_the_reference(
    kafka_cluster_running: RunningCluster,
    redis_cluster: Any,
    cluster_prefix: str,
    tmp_path: Path,
) -> None:
    log = tmp_path / "events.jsonl"
    oo_features(
        "generate", "--users", "150", "--days", "10", "--seed", str(SEED),
        "--out-of-order", "0.03", "--duplicates", "0.01", "--too-late", "0.005",
        "--invalid", "0.003", "--out", str(log),
    )  # fmt: skip
    env = _env(kafka_cluster_running, redis_cluster.url, cluster_prefix)
    try:
        produced = oo_features("produce", str(log), env=env, rejects_ok=True, check=False)
        assert "Traceback" not in produced.stderr and produced.returncode in (0, 1)
        flow = oo_features("flow", "--stop-at-end", "--processes", "2", env=env, rejects_ok=True)
        assert "Traceback" not in flow.stderr
        events, invalid = valid_events(log)
        assert invalid > 0
        ref = reference_features(events)
        view = stored_view(redis_cluster.url, env["OO_KEY_PREFIX"], sorted(ref))
        reborn = reborn_users(events)
        problems = view_differences(ref, view, reborn)
        assert not problems, f"{len(problems)} differences, first: " + "\n".join(problems[:15])
        _api_serves(env, view)
    finally:
        from oo_features.services import delete_keys

        delete_keys(redis_cluster.url, env["OO_KEY_PREFIX"] + ":")


def _api_serves(env: dict[str, str], view: dict[str, Any]) -> None:
    """The API serves every stored user (its agents are stored agents, its extras the stored
    extras), and 404 for a user with nothing stored."""
    settings = Settings(store_url=env["OO_STORE_URL"], key_prefix=env["OO_KEY_PREFIX"])
    with (
        ApiServer(create_app(settings)) as api,
        httpx.Client(base_url=api.url, trust_env=False, timeout=30) as client,
    ):
        for user_id, stored in sorted(view.items()):
            response = client.get(f"/v1/users/{user_id}/features")
            assert response.status_code == (404 if stored is None else 200), (user_id, response)
            if stored is not None:
                agents = response.json()["agents"]
                assert set(agents) <= set(stored["params"]), user_id
                for agent_id, served in agents.items():
                    assert served["extras"] == stored["extras"][agent_id], (user_id, agent_id)
