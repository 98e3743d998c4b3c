"""One Kafka configuration (ADR 0018): `connectors.kafka_config.client_config` builds every client.

Nothing needs to run: librdkafka checks `ssl.ca.location` when a client with
`security.protocol=SASL_SSL` is created, so a CA file that does not exist makes every real
client refuse to start, naming the property. That only happens if the property set reached
librdkafka's own configuration through `OO_KAFKA_PROPERTIES_FILE` / `OO_KAFKA_PROPERTIES`.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaException
from pydantic import ValidationError

from connectors.exceptions import ConnectorError, KafkaConfigError
from connectors.kafka_config import REQUIRED, client_config, load_properties, redacted
from connectors.settings import ConnectorSettings

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = "127.0.0.1:1"  # nothing listens: no client here may need a broker
MISSING_CA = "/nonexistent/oo-kafkaconf-probe-ca.pem"
PASSWORD = "s3cret-Pa55word-never-shown"

SECURED_FILE = f"""# written by an operator: secrets live here, not in the environment
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.username=oo-engine
sasl.password={PASSWORD}
ssl.ca.location={MISSING_CA}
"""


@pytest.fixture
def secured_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The environment kcluster's export line gives: brokers plus a properties file."""
    path = tmp_path / "client.properties"
    path.write_text(SECURED_FILE, encoding="utf-8")
    monkeypatch.setenv("OO_KAFKA_BOOTSTRAP", BOOTSTRAP)
    monkeypatch.setenv("OO_KAFKA_PROPERTIES_FILE", str(path))
    monkeypatch.delenv("OO_KAFKA_PROPERTIES", raising=False)
    monkeypatch.setenv("OO_KAFKA_TIMEOUT_S", "2")
    return path


# --- every real client, built the way the engine builds it ---------------------------------


def _producer() -> Any:
    from connectors.kafka import EventProducer

    return EventProducer(bootstrap=BOOTSTRAP, timeout_s=2)


def _topics_admin() -> Any:
    from connectors.kafka import ensure_topics

    return ensure_topics(BOOTSTRAP, ["t"], 1, 2)


def _source_admin() -> Any:
    from connectors.kafka_source import KafkaEventSource

    return KafkaEventSource(BOOTSTRAP, ["a", "b"]).list_parts()


def _source_consumers() -> Any:
    from connectors.kafka_source import KafkaEventSource

    return KafkaEventSource(BOOTSTRAP, ["a", "b"]).build_part("read_events", "0", None)


def _source_consumers_to_end() -> Any:
    from connectors.kafka_source import KafkaEventSource

    return KafkaEventSource(BOOTSTRAP, ["a"], tail=False).build_part("read_events", "0", None)


def _dead_letter_sink() -> Any:
    from connectors.bytewax_io import dead_letter_sink

    return dead_letter_sink(BOOTSTRAP).build("deadletter", 0, 1)


def _tombstone_log() -> Any:
    from connectors.tombstones import TombstoneLog

    return TombstoneLog(BOOTSTRAP, timeout_s=2)


def _tombstone_topic() -> Any:
    from connectors.tombstones import ensure_topic

    return ensure_topic(BOOTSTRAP, timeout_s=2)


def _tombstone_reader() -> Any:
    from connectors.tombstones import read_tombstones

    return read_tombstones(BOOTSTRAP, timeout_s=2)


def _tombstone_sink() -> Any:
    from connectors.tombstones import sink

    return sink(BOOTSTRAP).build("tombstones", 0, 1)


def _api_sink() -> Any:
    from serving.app import _build_sink
    from serving.metrics import Metrics
    from serving.settings import Settings

    return _build_sink(Settings(), Metrics()).check(timeout_s=2)


def _cli_cleanup() -> Any:
    from oo_features.services import delete_topics

    return delete_topics(BOOTSTRAP, "t-")


CLIENTS: dict[str, Callable[[], Any]] = {
    "producer": _producer,
    "topic admin": _topics_admin,
    "flow source admin": _source_admin,
    "flow source consumers (tail)": _source_consumers,
    "flow source consumers (--stop-at-end)": _source_consumers_to_end,
    "dead-letter sink": _dead_letter_sink,
    "tombstone producer": _tombstone_log,
    "tombstone topic admin": _tombstone_topic,
    "tombstone reader": _tombstone_reader,
    "tombstone Bytewax sink": _tombstone_sink,
    "API event sink": _api_sink,
    "CLI topic cleanup": _cli_cleanup,
}


@pytest.mark.parametrize("build", CLIENTS.values(), ids=CLIENTS.keys())
def test_each_client_takes_the_properties_file(secured_env: Path, build: Callable[[], Any]) -> None:
    from serving.exceptions import ServingError

    with pytest.raises((ConnectorError, ServingError, KafkaException)) as refused:
        build()
    message = str(refused.value)
    assert "ssl.ca.location" in message  # librdkafka itself loaded the CA file and failed
    assert PASSWORD not in message


def test_the_stamper_takes_the_properties_file(secured_env: Path) -> None:
    from connectors.freshness import IngestStamper
    from connectors.store.sqlite_store import SQLiteStore

    stamper = IngestStamper(SQLiteStore(":memory:"), bootstrap=BOOTSTRAP)
    stamper.start()
    stamper.stop(timeout_s=10)
    error = stamper.status.last_error or ""
    assert "ssl.ca.location" in error and PASSWORD not in error


def test_json_properties_reach_librdkafka(monkeypatch: pytest.MonkeyPatch) -> None:
    from connectors.kafka import EventProducer

    monkeypatch.setenv(
        "OO_KAFKA_PROPERTIES",
        f'{{"security.protocol": "SSL", "ssl.ca.location": "{MISSING_CA}"}}',
    )
    monkeypatch.delenv("OO_KAFKA_PROPERTIES_FILE", raising=False)
    with pytest.raises(KafkaConfigError, match=r"Kafka Producer for 127\.0\.0\.1:1 .*ssl\.ca"):
        EventProducer(bootstrap=BOOTSTRAP, timeout_s=2)


def test_a_client_id_reaches_librdkafka_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    # librdkafka names the client in every log line: the property went in, the logger too.
    from confluent_kafka import Producer

    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = Keep()
    client_log = logging.getLogger("connectors.kafka.client")
    client_log.addHandler(handler)
    monkeypatch.setattr(client_log, "level", logging.DEBUG)
    try:
        settings = ConnectorSettings(
            kafka_bootstrap=BOOTSTRAP,
            kafka_properties={"client.id": "oo-probe-client", "debug": "generic"},
        )
        producer = Producer(client_config(settings, "producer"))
        producer.poll(0.5)
        producer.flush(0)
    finally:
        client_log.removeHandler(handler)
    assert any("oo-probe-client" in line for line in records)


# --- precedence, refusals, secrets ----------------------------------------------------------


def test_precedence_defaults_file_json_overrides(tmp_path: Path) -> None:
    path = tmp_path / "p.properties"
    path.write_text("linger.ms=7\nclient.id=from-file\nsocket.timeout.ms = 9000\n")
    settings = ConnectorSettings(
        kafka_bootstrap="b:9092",
        kafka_properties_file=path,
        kafka_properties={"client.id": "from-json", "batch.size": 5},
    )
    config = client_config(settings, "producer", {"batch.size": 6})
    assert config["bootstrap.servers"] == "b:9092"
    assert config["linger.ms"] == "7"  # the file over the role's default (20)
    assert config["socket.timeout.ms"] == "9000"
    assert config["client.id"] == "from-json"  # JSON over the file
    assert config["batch.size"] == 6  # the caller over JSON
    assert config["enable.idempotence"] is True and config["acks"] == "all"
    assert config["compression.type"] == "lz4"
    assert client_config(settings, "producer", bootstrap="other:1")["bootstrap.servers"] == (
        "other:1"
    )


@pytest.mark.parametrize(
    ("role", "name", "value"),
    [
        ("producer", "acks", "1"),
        ("producer", "enable.idempotence", "false"),
        ("producer", "max.in.flight.requests.per.connection", 5),
        ("dead_letter", "max.in.flight.requests.per.connection", 2),
        ("dead_letter", "message.timeout.ms", "300000"),
        ("consumer", "enable.auto.commit", "true"),
        ("source", "isolation.level", "read_uncommitted"),
        ("source", "enable.partition.eof", False),
    ],
)
def test_a_required_property_is_never_overridden(role: Any, name: str, value: Any) -> None:
    settings = ConnectorSettings(kafka_bootstrap="b:9092", kafka_properties={name: value})
    with pytest.raises(KafkaConfigError) as refused:
        client_config(settings, role)
    message = str(refused.value)
    assert message.startswith("OO_KAFKA_PROPERTIES: ")
    assert repr(name) in message and "must be" in message


def test_a_required_property_set_to_its_own_value_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "p.properties"
    path.write_text("acks=-1\nenable.idempotence=true\nbootstrap.servers=b:9092\n")
    settings = ConnectorSettings(kafka_bootstrap="b:9092", kafka_properties_file=path)
    assert client_config(settings, "producer")["acks"] == "-1"
    plain = ConnectorSettings(kafka_bootstrap="b:9092", kafka_properties={})
    for role, required in REQUIRED.items():
        config = client_config(plain, role)
        assert all(config[name] == value for name, (value, _) in required.items())


def test_a_required_property_in_the_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "p.properties"
    path.write_text("enable.auto.commit=true\n")
    settings = ConnectorSettings(kafka_bootstrap="b:9092", kafka_properties_file=path)
    with pytest.raises(KafkaConfigError, match=f"OO_KAFKA_PROPERTIES_FILE={path}.*auto.commit"):
        client_config(settings, "consumer")


def test_other_brokers_in_the_properties_are_refused() -> None:
    settings = ConnectorSettings(
        kafka_bootstrap="b:9092", kafka_properties={"bootstrap.servers": "c:9092"}
    )
    with pytest.raises(KafkaConfigError, match=r"bootstrap\.servers"):
        client_config(settings, "admin")


def test_no_bootstrap_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OO_KAFKA_BOOTSTRAP", raising=False)
    with pytest.raises(KafkaConfigError, match="OO_KAFKA_BOOTSTRAP"):
        client_config(None, "producer")


def test_secrets_are_never_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "p.properties"
    path.write_text(SECURED_FILE)
    monkeypatch.setenv("OO_KAFKA_PROPERTIES", f'{{"sasl.password": "{PASSWORD}"}}')
    settings = ConnectorSettings(kafka_bootstrap="b:9092", kafka_properties_file=path)
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings)
    config = client_config(settings, "producer")
    assert config["sasl.password"] == PASSWORD  # it does reach the client
    shown = redacted(config)
    assert shown["sasl.password"] == "***" and PASSWORD not in str(shown)
    # a refused value is never echoed either
    monkeypatch.setenv("OO_KAFKA_PROPERTIES", f'{{"acks": "{PASSWORD}"}}')
    with pytest.raises(KafkaConfigError) as refused:
        client_config(ConnectorSettings(kafka_bootstrap="b:9092"), "producer")
    assert PASSWORD not in str(refused.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{not json", "does not parse"),
        ('["a"]', "got a JSON list"),
        ('{"acks": {"x": 1}}', "'acks': expected a string, number or boolean"),
        ('{"error_cb": "x"}', "callback the engine sets"),
    ],
)
def test_bad_json_properties_name_the_variable(
    text: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OO_KAFKA_PROPERTIES", text)
    with pytest.raises((KafkaConfigError, ValidationError)) as refused:
        ConnectorSettings()
    assert "OO_KAFKA_PROPERTIES" in str(refused.value) and expected in str(refused.value)


def test_a_properties_file_that_cannot_be_read_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.properties"
    with pytest.raises(KafkaConfigError, match=f"OO_KAFKA_PROPERTIES_FILE={missing}"):
        load_properties(missing)
    empty_value = tmp_path / "empty.properties"
    empty_value.write_text(f"sasl.username\nsasl.password={PASSWORD}\n")
    with pytest.raises(KafkaConfigError, match=r"'sasl\.username': expected a value") as refused:
        load_properties(empty_value)
    assert PASSWORD not in str(refused.value)
    binary = tmp_path / "binary.properties"
    binary.write_bytes(b"\xff\xfe\x00a=b")
    with pytest.raises(KafkaConfigError, match=r"binary\.properties"):
        load_properties(binary)


def test_a_properties_file_in_java_style(tmp_path: Path) -> None:
    path = tmp_path / "java.properties"
    path.write_text("! comment\n# comment\nsasl.username : oo\nssl.ca.location=/a/b\\\n/c.pem\n")
    assert load_properties(path) == {"sasl.username": "oo", "ssl.ca.location": "/a/b/c.pem"}


# --- nothing else writes a Kafka client configuration -----------------------------------

_CLIENTS = {"Producer", "Consumer", "AdminClient", "SerializingProducer", "DeserializingConsumer"}
_SCANNED = ["connectors", "serving", "flows", "oo_features", "bench", "scripts"]


def _literal_configs(path: Path) -> list[str]:
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
        args = list(node.args) + [k.value for k in node.keywords]
        if name == "new_client" and node.args:
            first = node.args[0]
            name = first.id if isinstance(first, ast.Name) else ""
            args = args[1:]
        if name not in _CLIENTS:
            continue
        for arg in args:
            literal = isinstance(arg, ast.Dict) or (
                isinstance(arg, ast.Call) and getattr(arg.func, "id", "") == "dict"
            )
            if literal:
                found.append(f"{path}:{node.lineno}: {name}(<literal dict>)")
    return found


def test_no_module_builds_a_kafka_client_from_a_literal_config() -> None:
    files = [p for folder in _SCANNED for p in (ROOT / folder).rglob("*.py")]
    files.append(ROOT / "tests" / "fixtures_services.py")
    assert len(files) > 50
    found = [hit for path in files for hit in _literal_configs(path)]
    assert not found, "build the config with connectors.kafka_config.client_config:\n" + "\n".join(
        found
    )


def test_the_scan_sees_a_literal_config(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from confluent_kafka import Producer\n"
        "Producer({'bootstrap.servers': 'x'})\n"
        "new_client(Consumer, dict(a=1))\n"
    )
    assert len(_literal_configs(sample)) == 2


def test_only_a_refused_handshake_or_login_counts_as_a_security_error() -> None:
    from confluent_kafka import KafkaError

    from connectors.kafka_config import is_security_error

    down = "sasl_ssl://127.0.0.1:9093/bootstrap: Connect to ipv4#127.0.0.1:9093 failed: refused"
    assert not is_security_error(KafkaError(KafkaError._TRANSPORT, down))
    assert not is_security_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    tls = "sasl_ssl://h:1/1: SSL handshake failed: certificate verify failed (in state X)"
    assert is_security_error(KafkaError(KafkaError._TRANSPORT, tls))
    assert is_security_error(KafkaError(KafkaError._AUTHENTICATION, "invalid credentials"))
