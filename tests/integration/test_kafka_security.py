"""A refused connection fails fast with a clear error, against the real (plaintext) broker.

Pointing a SASL_SSL configuration at the local plaintext listener makes the TLS handshake
fail: librdkafka reports it through the error callback (`error_cb`), and every client of
the engine turns that into a `KafkaSecurityError` (a `ConnectorError`) naming the broker and
the cause, instead of waiting out `OO_KAFKA_TIMEOUT_S` as if the broker were merely away.
Wrong credentials and an untrusted CA on a secured cluster take the same path (issue 15's
cluster tests). The error type is the proof: a timeout raises a plain
`KafkaUnavailableError`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from connectors.exceptions import KafkaSecurityError
from tests.cli import oo_features
from tests.fixtures_services import Services

PASSWORD = "wrong-Pa55word-never-shown"
SECURED = f"""security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.username=oo-engine
sasl.password={PASSWORD}
"""


@pytest.fixture
def secured_env(
    services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    path = tmp_path / "client.properties"
    path.write_text(SECURED, encoding="utf-8")
    env = {
        "OO_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
        "OO_KAFKA_PROPERTIES_FILE": str(path),
        "OO_KAFKA_TIMEOUT_S": "20",
        "OO_TOPIC_PREFIX": "tsec-",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("OO_KAFKA_PROPERTIES", raising=False)
    return env


def _producer(bootstrap: str) -> Any:
    from connectors.kafka import EventProducer

    return EventProducer(bootstrap=bootstrap, timeout_s=20)


def _admin(bootstrap: str) -> Any:
    from connectors.kafka import ensure_topics

    return ensure_topics(bootstrap, ["tsec-x"], 1, 20)


def _source(bootstrap: str) -> Any:
    from connectors.kafka_source import KafkaEventSource
    from connectors.settings import ConnectorSettings

    return KafkaEventSource(bootstrap, ["tsec-a"], settings=ConnectorSettings()).list_parts()


def _dead_letters(bootstrap: str) -> Any:
    from connectors.bytewax_io import dead_letter_sink
    from connectors.settings import ConnectorSettings

    return dead_letter_sink(bootstrap, settings=ConnectorSettings()).build("deadletter", 0, 1)


def _tombstones(bootstrap: str) -> Any:
    from connectors.tombstones import read_tombstones

    return read_tombstones(bootstrap, timeout_s=20)


CLIENTS: dict[str, Callable[[str], Any]] = {
    "producer": _producer,
    "admin": _admin,
    "flow source": _source,
    "dead-letter sink": _dead_letters,
    "tombstone reader": _tombstones,
}


@pytest.mark.parametrize("build", CLIENTS.values(), ids=CLIENTS.keys())
def test_a_tls_client_at_a_plaintext_broker_is_refused_clearly(
    secured_env: dict[str, str], services: Services, build: Callable[[str], Any]
) -> None:
    with pytest.raises(KafkaSecurityError) as refused:
        build(services.kafka_bootstrap)
    message = str(refused.value)
    assert f"Kafka at {services.kafka_bootstrap} refused" in message
    assert "SSL_HANDSHAKE" in message  # librdkafka's cause: the TLS handshake
    assert PASSWORD not in message


def test_the_stamper_reports_the_refusal(secured_env: dict[str, str], services: Services) -> None:
    import time

    from connectors.freshness import IngestStamper
    from connectors.store.sqlite_store import SQLiteStore

    stamper = IngestStamper(SQLiteStore(":memory:"), bootstrap=services.kafka_bootstrap)
    stamper.start()
    try:
        deadline = time.monotonic() + 30
        while "SSL_HANDSHAKE" not in (stamper.status.last_error or ""):
            assert time.monotonic() < deadline, f"stamper said: {stamper.status.last_error}"
            time.sleep(0.2)
    finally:
        stamper.stop()
    assert PASSWORD not in (stamper.status.last_error or "")


def test_the_cli_names_the_broker_and_cause(secured_env: dict[str, str], tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("")
    result = oo_features("produce", str(events), env=secured_env, check=False, timeout=120)
    assert result.returncode == 2, result.stderr
    assert f"Kafka at {secured_env['OO_KAFKA_BOOTSTRAP']} refused" in result.stderr
    assert "SSL_HANDSHAKE" in result.stderr and PASSWORD not in result.stderr
    exported = oo_features(
        "export", "--out", str(tmp_path / "x.jsonl"), env=secured_env, check=False, timeout=120
    )
    assert exported.returncode == 2 and "SSL_HANDSHAKE" in exported.stderr
