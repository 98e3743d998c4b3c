"""Errors raised at the connectors boundary.

Third-party failures (protobuf, confluent-kafka, redis, sqlite) are translated
here so callers handle one family::

    ConnectorError
     ├── DecodeError          bytes or a JSON line that is not an oo.events.v1.Event
     ├── ValidationError      a parsed Event that breaks a contract rule (names the field)
     ├── KafkaConfigError     the Kafka client configuration is wrong (names the property)
     ├── KafkaUnavailableError  the broker did not answer within the bounded time
     │    └── KafkaSecurityError  the broker refused the connection (SASL/TLS)
     ├── DeliveryError        the broker refused or did not confirm some events
     ├── EventSinkError       an event was not confirmed by its event log (Kafka or file)
     └── StoreError           the feature store failed
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Base of every error raised by `connectors`."""


class DecodeError(ConnectorError):
    """The input does not parse as an `oo.events.v1.Event`."""


class ValidationError(ConnectorError):
    """A parsed event breaks a rule of the contract.

    `field` names the offending field (protobuf name, dotted for payload fields).
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"field '{field}': {message}")
        self.field = field
        self.reason = message


class KafkaUnavailableError(ConnectorError):
    """Kafka could not be reached within the configured timeout."""


class KafkaConfigError(ConnectorError):
    """The Kafka client configuration is wrong: names the variable/file and the property, never
    a property's value (it may be a secret)."""


class KafkaSecurityError(KafkaUnavailableError):
    """The broker refused the connection: authentication failed or the TLS handshake failed
    (wrong password, untrusted CA, a TLS client at a plaintext listener). Names the broker and
    librdkafka's cause."""


class DeliveryError(ConnectorError):
    """Some events were not confirmed by the broker's delivery reports."""


class EventSinkError(ConnectorError):
    """An event could not be written to its event log (`connectors.sinks`: Kafka or a file)
    within the bounded time; names the event (kind, id, user) and the cause."""


class StoreError(ConnectorError):
    """The feature store failed to read or write."""
