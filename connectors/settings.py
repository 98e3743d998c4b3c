"""Settings shared by every process that touches the outside (`OO_*` environment variables).

The serving app extends this class; the flow and the CLI use it directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class ConnectorSettings(BaseSettings):
    """Where Kafka and the store are. Unset Kafka means: embedded, file-based runs only."""

    model_config = SettingsConfigDict(env_prefix="OO_", extra="ignore")

    kafka_bootstrap: str | None = Field(
        default=None, description="Kafka bootstrap servers, e.g. 127.0.0.1:9092; unset: no Kafka."
    )
    store_url: str = Field(
        default="sqlite:///.oo/features.db",
        description="Feature store: redis://host:port/db, redis+cluster://host:port[,host:port...]/0 (Redis Cluster) or sqlite:///path (embedded default).",
    )
    topic_prefix: str = Field(
        default="", description="Prefix for every topic name (isolates tests and tenants)."
    )
    key_prefix: str = Field(default="oo", description="Prefix for every store key.")
    kafka_timeout_s: float = Field(
        default=10.0, description="Bound on waiting for Kafka (connect, flush) before failing."
    )
    kafka_properties: Annotated[dict[str, str | int | float | bool], NoDecode] = Field(
        default={},
        repr=False,
        description="More librdkafka properties for every Kafka client, as a JSON object "
        '(e.g. `{"security.protocol": "SASL_SSL", "client.id": "oo"}`); over the file\'s, '
        "under what the engine requires (a conflict is refused, naming the property). "
        "See connectors/README.md, Kafka configuration.",
    )
    kafka_properties_file: Path | None = Field(
        default=None,
        description="Path of a `key=value` librdkafka/Java properties file read by every Kafka "
        "client (for secrets: `sasl.password`, ...; values are never logged); unset: none.",
    )
    partitions: int = Field(default=4, description="Partitions of topics created when missing.")
    flow_metrics_port: int | None = Field(
        default=None,
        description="Port of the flow's Prometheus metrics (process i: port + i); unset: off.",
    )
    flow_metrics_host: str = Field(
        default="127.0.0.1",
        description="Address the flow's metrics bind (no auth: loopback unless a container "
        "or a trusted network needs 0.0.0.0).",
    )

    ledger_retention_days: float = Field(
        default=90.0,
        ge=0,
        description="Days a served tip stays in the tip ledger (what it was built from, its "
        "reactions); 0: no ledger.",
    )

    ledger_store_url: str | None = Field(
        default=None,
        description="A Redis server of its own for the tip ledger (redis://, rediss:// or a "
        "cluster URL), so that recording tips never holds up the feature store's reads "
        "(ADR 0052); unset: the ledger is kept in the feature store. Only with a Redis "
        "OO_STORE_URL.",
    )

    @field_validator("kafka_properties", mode="before")
    @classmethod
    def _properties_object(cls, value: Any) -> Any:
        """A clear error naming the variable, never echoing the value (it may hold secrets)."""
        from connectors.kafka_config import parse_json_properties

        if isinstance(value, str | dict):
            return parse_json_properties(value)
        raise ValueError(
            f"OO_KAFKA_PROPERTIES: expected a JSON object of librdkafka properties; got a "
            f"{type(value).__name__}"
        )

    @property
    def ledger_retention_ms(self) -> int:
        return int(self.ledger_retention_days * 86_400_000)
