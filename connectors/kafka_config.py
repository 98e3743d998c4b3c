"""The one place every Kafka client's configuration is built (ADR 0018).

`client_config(settings, role, overrides)` returns the librdkafka configuration of one
client: the producer, the flow's source consumers, the dead-letter sink, the tombstone log,
the API's ingestion stamper, admin clients, the CLI's and the tests' helpers. Nothing else
in the repository writes a Kafka client configuration.

Precedence, lowest first:

1. the role's defaults (tuning: compression, linger, batch sizes...);
2. `OO_KAFKA_PROPERTIES_FILE`: a Java/librdkafka-style `key=value` properties file (for
   secrets: `sasl.password`, ...);
3. `OO_KAFKA_PROPERTIES`: a JSON object of librdkafka properties;
4. the caller's `overrides` (what the engine itself needs of that one client).

`bootstrap.servers` is always `OO_KAFKA_BOOTSTRAP` (or the caller's `bootstrap`). The
role's *required* properties (`REQUIRED`: idempotence and `acks=all` for producers,
`enable.auto.commit=false` and `read_committed` for consumers, ...) are what the engine's
guarantees rest on: a layer that sets one to another value is refused with a
`KafkaConfigError` naming the property, where it was set, what is required and why; it is
never silently overridden either way.

Failure behaviour: a properties file that cannot be read or parsed, a JSON value that is not
an object of scalars, or a conflict is a `KafkaConfigError` naming the file / variable and
the property. Property *values* are never logged, shown in reprs or put in an error (a
value may be a password); `redacted(config)` is the form to log.

`ClientErrors` is librdkafka's `error_cb` for one client; `wait_reachable(client, errors)`
asks the cluster for metadata and fails fast with `KafkaSecurityError` when the error
callback reports an authentication or TLS failure (wrong password, untrusted CA, a TLS
client at a plaintext listener), or `KafkaUnavailableError` when no broker answers within
the timeout, both naming the broker and librdkafka's cause.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import javaproperties
from confluent_kafka import KafkaError, KafkaException

from connectors.exceptions import KafkaConfigError, KafkaSecurityError, KafkaUnavailableError

if TYPE_CHECKING:
    from connectors.settings import ConnectorSettings

__all__ = [
    "REQUIRED",
    "ClientErrors",
    "Role",
    "client_config",
    "describe_error",
    "load_properties",
    "new_client",
    "redacted",
    "wait_reachable",
]

log = logging.getLogger(__name__)
# librdkafka's own log lines (connection refused, retries...) go here, not to stderr:
# a caller that wants them configures logging; the CLI reports one clear error instead.
client_log = logging.getLogger("connectors.kafka.client")
client_log.addHandler(logging.NullHandler())

Role = Literal["producer", "dead_letter", "consumer", "source", "admin"]
"""`producer`: events and tombstones; `dead_letter`: the flow's dead-letter sink; `consumer`:
a reader in a group or assigned (stamper, tombstone reader, tests); `source`: the flow's own
assigned readers; `admin`: topic creation and metadata."""

Scalar = str | int | float | bool

_PRODUCER_REQUIRED: dict[str, tuple[Scalar, str]] = {
    "enable.idempotence": (True, "no duplicates or reordering on retries"),
    "acks": ("all", "an event counts as published only once every in-sync replica has it"),
    # librdkafka confirms a refused request's events when a later request to the same
    # partition succeeds ("implicitly acked"); a broker that has just become the leader (a new
    # topic, a leader change) can refuse the first and take the second: events confirmed but
    # never written (tests/e2e/test_poison_e2e.py, ADR 0048).
    "max.in.flight.requests.per.connection": (
        1,
        "a refused request is retried before the next is sent: no event is confirmed unwritten",
    ),
    # Java clients hash keys with murmur2: the same user lands on the same partition
    # whichever client published, and both event topics agree (the flow merges by index).
    "partitioner": ("murmur2_random", "a user's events land on the same partition index"),
}
_CONSUMER_REQUIRED: dict[str, tuple[Scalar, str]] = {
    "enable.auto.commit": (False, "offsets are the caller's (snapshots, commits after stamping)"),
    # Idempotent producers write transactional markers only with transactions; this keeps a
    # future transactional producer's aborted writes out.
    "isolation.level": ("read_committed", "aborted writes are never read"),
}
REQUIRED: dict[Role, dict[str, tuple[Scalar, str]]] = {
    "producer": _PRODUCER_REQUIRED,
    "dead_letter": _PRODUCER_REQUIRED
    | {"message.timeout.ms": (0, "a dead letter is never dropped while the broker is away")},
    "consumer": _CONSUMER_REQUIRED,
    "source": _CONSUMER_REQUIRED
    | {
        "enable.partition.eof": (True, "a topic's end is how the merge of the topics goes on"),
        "group.id": ("oo-features-flow-assign-only", "assign() only: no group, no commits"),
    },
    "admin": {},
}
"""Per role: property -> (required value, why). Set elsewhere to another value: refused."""

_DEFAULTS: dict[Role, dict[str, Scalar]] = {
    "producer": {
        "compression.type": "lz4",
        "linger.ms": 20,
        "batch.size": 1_000_000,
        "queue.buffering.max.messages": 500_000,
    },
    "dead_letter": {
        "compression.type": "zstd",
        "linger.ms": 5,
        # Checked by the client before compression: let the broker judge the compressed size.
        "message.max.bytes": 64 * 1024 * 1024,
    },
    "consumer": {"auto.offset.reset": "earliest"},
    "source": {},
    "admin": {},
}
"""Per role: tuning a deployment may change (through the properties or the caller)."""

_SECRET_WORDS = ("password", "secret", "jaas", "key.pem", "token", "credential")
_NOT_FROM_PROPERTIES = ("logger", "error_cb", "on_delivery", "stats_cb", "oauth_cb", "throttle_cb")


def is_secret(name: str) -> bool:
    """Whether a property may hold a secret (never shown: `redacted`)."""
    return any(word in name.lower() for word in _SECRET_WORDS)


def redacted(config: Mapping[str, Any]) -> dict[str, str]:
    """`config` safe to log: secret-looking values are `***`, callbacks their kind only."""
    out: dict[str, str] = {}
    for name, value in config.items():
        if is_secret(name):
            out[name] = "***"
        elif callable(value) or isinstance(value, logging.Logger):
            out[name] = f"<{type(value).__name__}>"
        else:
            out[name] = str(value)
    return out


def load_properties(path: Path | str) -> dict[str, str]:
    """The `key=value` properties of a Java/librdkafka-style file (`#`/`!` comments, `:` or `=`).

    Raises `KafkaConfigError` naming the file (never a value) when it cannot be read or a
    property has no value.
    """
    where = f"OO_KAFKA_PROPERTIES_FILE={path}"
    try:
        with open(path, encoding="utf-8") as handle:
            loaded: dict[str, str] = javaproperties.load(handle)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise KafkaConfigError(
            f"{where}: cannot read the Kafka properties file: {type(exc).__name__}: "
            f"{getattr(exc, 'strerror', None) or 'not a UTF-8 properties file'}"
        ) from None
    for name, value in loaded.items():
        _check_name(name, where)
        if value == "":
            raise KafkaConfigError(f"{where}: property {name!r}: expected a value; got none")
    return loaded


def parse_json_properties(text: str | Mapping[str, Any] | None) -> dict[str, Scalar]:
    """`OO_KAFKA_PROPERTIES`: a JSON object of librdkafka property -> string/number/boolean.

    Raises `KafkaConfigError` naming the variable and the property (never a value).
    """
    where = "OO_KAFKA_PROPERTIES"
    if text is None or text == "":
        return {}
    if isinstance(text, str):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            raise KafkaConfigError(
                f"{where}: expected a JSON object of librdkafka properties; got text that "
                f"does not parse ({exc.msg} at character {exc.pos})"
            ) from None
    else:
        parsed = dict(text)
    if not isinstance(parsed, dict):
        raise KafkaConfigError(
            f"{where}: expected a JSON object of librdkafka properties; got a JSON "
            f"{type(parsed).__name__}"
        )
    for name, value in parsed.items():
        _check_name(name, where)
        if not isinstance(value, str | int | float | bool):
            raise KafkaConfigError(
                f"{where}: property {name!r}: expected a string, number or boolean; "
                f"got a JSON {type(value).__name__}"
            )
    return parsed


def _check_name(name: str, where: str) -> None:
    if not name or name.strip() != name:
        raise KafkaConfigError(f"{where}: expected librdkafka property names; got {name!r}")
    if name in _NOT_FROM_PROPERTIES:
        raise KafkaConfigError(
            f"{where}: property {name!r} is a callback the engine sets; it cannot come from "
            "configuration"
        )


def _same(value: Any, required: Scalar) -> bool:
    def norm(v: Any) -> str:
        text = str(v).lower() if not isinstance(v, bool) else ("true" if v else "false")
        return {"-1": "all"}.get(text, text)

    return norm(value) == norm(required)


def client_config(
    settings: ConnectorSettings | None,
    role: Role,
    overrides: Mapping[str, Any] | None = None,
    *,
    bootstrap: str | None = None,
    errors: ClientErrors | None = None,
) -> dict[str, Any]:
    """The librdkafka configuration of one client of `role` (precedence: module docstring).

    `settings`: where `OO_KAFKA_*` come from (None: the environment, read now); `bootstrap`:
    the brokers when the caller names them (default `settings.kafka_bootstrap`); `errors`:
    the client's error callback (`ClientErrors`). Raises `KafkaConfigError` for a missing
    bootstrap, an unreadable properties file or a required property set to another value.
    """
    if settings is None:
        from connectors.settings import ConnectorSettings

        settings = ConnectorSettings()
    brokers = bootstrap or settings.kafka_bootstrap
    if not brokers:
        raise KafkaConfigError(
            "OO_KAFKA_BOOTSTRAP: expected Kafka bootstrap servers (host:port,...); got none"
        )
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if settings.kafka_properties_file is not None:
        path = settings.kafka_properties_file
        layers.append((f"OO_KAFKA_PROPERTIES_FILE={path}", load_properties(path)))
    if settings.kafka_properties:
        layers.append(("OO_KAFKA_PROPERTIES", parse_json_properties(settings.kafka_properties)))
    if overrides:
        layers.append(("the caller's overrides", overrides))
    required = REQUIRED[role]
    config: dict[str, Any] = {"bootstrap.servers": brokers, "logger": client_log}
    config |= {name: value for name, (value, _) in required.items()}
    config |= _DEFAULTS[role]
    for where, layer in layers:
        for name, value in layer.items():
            if name == "bootstrap.servers" and value != brokers:
                raise KafkaConfigError(
                    f"{where}: property 'bootstrap.servers' differs from OO_KAFKA_BOOTSTRAP "
                    f"({brokers}); set the brokers in one place"
                )
            if name in required and not _same(value, required[name][0]):
                wanted, why = required[name]
                raise KafkaConfigError(
                    f"{where}: property {name!r} must be {_shown(wanted)} for a Kafka {role} "
                    f"client ({why}); got another value"
                )
            config[name] = value
    if errors is not None:
        config["error_cb"] = errors
    return config


ClientT = TypeVar("ClientT")


def new_client(factory: Callable[[dict[str, Any]], ClientT], config: dict[str, Any]) -> ClientT:
    """`factory(config)` (a confluent-kafka `Producer`, `Consumer`, `AdminClient`...), with
    librdkafka's refusal of the configuration itself (an unknown property, a CA file that
    does not load...) raised as `KafkaConfigError` naming the brokers and librdkafka's reason.
    """
    try:
        return factory(config)
    except KafkaException as exc:
        name = getattr(factory, "__name__", "Kafka client")
        raise KafkaConfigError(
            f"a Kafka {name} for {config.get('bootstrap.servers')} refused its configuration: "
            f"{describe_error(exc)}"
        ) from exc
    except (TypeError, ValueError) as exc:  # a property of the wrong type (client-side check)
        raise KafkaConfigError(
            f"a Kafka client for {config.get('bootstrap.servers')} refused its configuration: {exc}"
        ) from exc


def _shown(value: Scalar) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


# --- errors -----------------------------------------------------------------------------

_SECURITY_CODES = frozenset(
    {
        KafkaError._AUTHENTICATION,
        KafkaError._SSL,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.ILLEGAL_SASL_STATE,
        KafkaError.UNSUPPORTED_SASL_MECHANISM,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    }
)
# librdkafka's wording of a refused TLS handshake or SASL exchange (the broker's own name,
# `sasl_ssl://host:port/id`, is not matched: a broker that is merely down is not refused).
_SECURITY_WORDS = (
    "ssl handshake",
    "state ssl_handshake",
    "state auth",
    "sasl authentication",
    "authentication failed",
    "certificate verify",
    "plaintext broker",
)


def describe_error(exc: BaseException | KafkaError | None) -> str:
    """The human part of a client error (librdkafka's text, without the KafkaError{...} frame)."""
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        exc = exc.args[0]
    if isinstance(exc, KafkaError):
        return str(exc.str())
    return "" if exc is None else str(exc)


def is_security_error(err: KafkaError) -> bool:
    """An authentication or TLS failure: retrying with the same settings will not help."""
    if err.code() in _SECURITY_CODES:
        return True
    text = str(err.str()).lower()
    return any(word in text for word in _SECURITY_WORDS)


class ClientErrors:
    """librdkafka's `error_cb` for one client: remembers the last error and the last
    authentication/TLS failure (served by the client's `poll`, `flush`, `consume`...).

    Logs each distinct error once at warning (librdkafka's text: broker and cause; never a
    property value).
    """

    def __init__(self, bootstrap: str, client: str) -> None:
        self.bootstrap = bootstrap
        self.client = client
        self.last: KafkaError | None = None
        self.security: KafkaError | None = None
        self._lock = threading.Lock()
        self._logged = ""

    def __call__(self, err: KafkaError) -> None:
        with self._lock:
            self.last = err
            if is_security_error(err):
                self.security = err
            text = str(err.str())
        if text != self._logged:
            self._logged = text
            # Under librdkafka's own logger: silent unless the host configures logging (the
            # CLI reports one clear error instead).
            client_log.warning("Kafka %s client (%s): %s", self.client, self.bootstrap, text)

    def security_error(self) -> KafkaSecurityError | None:
        """The authentication/TLS failure seen, as the error to raise; None if none."""
        err = self.security
        if err is None:
            return None
        return KafkaSecurityError(
            f"Kafka at {self.bootstrap} refused the {self.client} client's connection: "
            f"{describe_error(err)} (check security.protocol, SASL credentials and "
            "ssl.ca.location in OO_KAFKA_PROPERTIES / OO_KAFKA_PROPERTIES_FILE)"
        )

    def unavailable(
        self, timeout_s: float, cause: BaseException | KafkaError | None = None
    ) -> KafkaUnavailableError:
        """`KafkaUnavailableError` naming the broker and the best cause known."""
        detail = describe_error(self.last if self.last is not None else cause)
        return KafkaUnavailableError(
            f"Kafka at {self.bootstrap} did not answer within {timeout_s:g} s"
            + (f" ({detail})" if detail else "")
        )


class _MetadataClient(Protocol):
    def list_topics(self, topic: str | None = ..., timeout: float = ...) -> Any: ...

    def poll(self, timeout: float = ...) -> Any: ...


def wait_reachable(
    client: _MetadataClient, errors: ClientErrors, timeout_s: float, topic: str | None = None
) -> Any:
    """The cluster's metadata (of `topic`, or all), asked in short slices until `timeout_s`.

    Between slices the client's callbacks are served, so an authentication or TLS failure
    reported by `error_cb` raises `KafkaSecurityError` at once instead of waiting out the
    timeout; no answer at all raises `KafkaUnavailableError`. Both name the broker and cause.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        try:
            if topic is None:
                return client.list_topics(timeout=max(min(remaining, 0.5), 0.01))
            return client.list_topics(topic, timeout=max(min(remaining, 0.5), 0.01))
        except KafkaException as exc:
            client.poll(0)  # serve error_cb: the cause (refused, TLS, SASL...)
            failed = errors.security_error()
            if failed is not None:
                raise failed from exc
            if time.monotonic() >= deadline:
                raise errors.unavailable(timeout_s, exc) from exc
