"""A Redis Cluster master killed (`kill -9`) while the flow writes: its replica takes over, the
flow retries through the failover, and the store ends exactly as an undisturbed run.

`oo-features flow` (tail mode) reads the single-node Kafka of the `services` fixture and writes
to the session's Redis Cluster (`redis_cluster` fixture, 3 masters + 3 replicas). Half of a
generated log is published and written; the other half is published and, while the flow
writes it, the master serving the last event's user is killed with SIGKILL. The test waits
for its replica to be promoted, then for the store to equal the reference of the whole log
(`tests/reference.py`, compared as `tests/e2e/test_outage_e2e.py` does) with the killed node
still down: what the flow wrote before the kill must be on the replica (writes wait for a
replica's acknowledgement, ADR 0021). Then the node is started again and rejoins as a replica.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from oo_features.services import redis_cluster as cluster_service
from proto import events_pb2 as pb
from tests.e2e.test_outage_e2e import FlowRun, metric, run_through_fault, wait_for
from tests.e2e.test_outage_e2e import events as events  # a fixture

pytestmark = pytest.mark.cluster


class _ClusterStore:
    """What `run_through_fault` needs of a store: its URL."""

    def __init__(self, url: str) -> None:
        self.url = url


def test_a_killed_master_fails_over_and_the_features_equal_an_undisturbed_run(
    services: Any,
    redis_cluster: Any,
    topic_prefix: str,
    tmp_path: Path,
    events: list[pb.Event],
) -> None:
    root = redis_cluster.root
    killed: list[cluster_service.ClusterNode] = []

    def kill_a_master(flow: FlowRun, publish_second_half: Any) -> None:
        key = f"{flow.key_prefix}:{{{events[-1].user_id}}}:meta"
        victim = cluster_service.master_of(root, key)
        assert victim.pid is not None
        publish_second_half()
        os.kill(victim.pid, signal.SIGKILL)  # while the flow writes the second half
        killed.append(victim)

        def promoted() -> bool:
            try:
                return cluster_service.master_of(root, key).port != victim.port
            except Exception:
                return False

        wait_for("the replica promoted", promoted, timeout_s=60, alive=flow.process)

    flow = run_through_fault(
        tmp_path,
        bootstrap=services.kafka_bootstrap,
        redis=_ClusterStore(redis_cluster.url),  # type: ignore[arg-type]
        prefix=topic_prefix,
        events=events,
        fault=kill_a_master,
    )
    try:
        assert killed, "no master was killed"
        assert flow.process.poll() is None, flow.log()
        retries = metric(flow.metrics_port, "oo_flow_store_write_retries_total")
        print(f"store write retries through the failover: {retries}")
    finally:
        flow.stop()
        started = time.monotonic()
        cluster_service.up(root, echo=lambda line: None)  # the killed node rejoins
        print(f"killed node back in {time.monotonic() - started:.1f} s")
    roles = {n.port: n.role for n in cluster_service.status(root)}
    assert roles[killed[0].port] == "slave", roles
