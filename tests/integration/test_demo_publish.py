"""The demo on real services publishes its history before it runs the flow: an event Kafka did
not confirm stops the demo with the reason, never a demo that goes on without it.

A `make test` run under load once failed `tests/e2e/test_demo_services.py` with 292 of a demo's
295 feedback events in its topic: the demo waited at most 30 s for the delivery reports and went
on whatever they said. Here the broker refuses every feedback event (the topic takes only tiny
batches), which is the same silence made certain.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from connectors import topics
from oo_features.demo import _replay_kafka
from oo_features.errors import CommandError
from oo_features.generate import generate_lines
from tests.fixtures_services import Services


def test_the_demo_stops_when_kafka_does_not_confirm_an_event(
    services: Services, topic_prefix: str, kafka_admin: AdminClient, tmp_path: Path
) -> None:
    name = topic_prefix + topics.FEEDBACK
    created = kafka_admin.create_topics(
        [NewTopic(name, num_partitions=1, replication_factor=1, config={"max.message.bytes": "64"})]
    )
    created[name].result(timeout=30)
    log = tmp_path / "events.jsonl"
    lines = list(generate_lines(3, 4, 7))
    assert any("tipShown" in line for line in lines)
    log.write_text("".join(line + "\n" for line in lines))
    with pytest.raises(CommandError, match=r"Kafka did not confirm \d+ of \d+ events") as caught:
        _replay_kafka(
            log, services.kafka_bootstrap, f"sqlite:///{tmp_path / 'f.db'}", "k", topic_prefix
        )
    assert "large" in str(caught.value).lower() or "size" in str(caught.value).lower()
    assert not (tmp_path / "f.db").exists()  # the flow never ran
