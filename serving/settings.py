"""The serving app's settings: one class, every value from an `OO_*` environment variable.

`Settings` extends the connectors' settings (Kafka, store, prefixes) with what
only the API needs: where it binds, its bearer token, the orchestrator and
the circuit breaker around it, and where feedback goes when Kafka is absent.
`check_bind` is the one rule about exposure: without a token the API binds
loopback only, a placeholder token is never accepted, and a non-loopback bind needs a
strong token (`weak_token_reason` says what that means).
"""

from __future__ import annotations

import ipaddress
import itertools
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator

from connectors.settings import ConnectorSettings

PLACEHOLDER_TOKENS = frozenset(
    {"changeme", "change-me", "change_me", "changethis", "secret", "token", "password", "test"}
)
MIN_TOKEN_LENGTH = 16
MIN_DISTINCT_CHARACTERS = 10
MAX_SEQUENCE_RUN = 7
WEAK_WORDS = (
    "changeme",
    "change-me",
    "change_me",
    "changethis",
    "password",
    "passwd",
    "secret",
    "token",
    "example",
    "default",
    "qwerty",
    "letmein",
    "admin",
)
STRONG_TOKEN_RULE = (
    f"at least {MIN_TOKEN_LENGTH} characters, at least {MIN_DISTINCT_CHARACTERS} different ones, "
    "not a repetition of a shorter string, no run of more than "
    f"{MAX_SEQUENCE_RUN} equal or consecutive characters (aaaa, 1234, dcba), and none of the "
    f"words {', '.join(WEAK_WORDS)}; e.g. `python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`"
)


class InsecureSettingsError(ValueError):
    """The settings would expose the API without a usable token."""


def is_loopback(host: str) -> bool:
    """True for a host name or address that only this machine can reach."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_token(token: SecretStr | None) -> None:
    """Refuse a placeholder or too-short token; None (no token) passes here."""
    if token is None:
        return
    value = token.get_secret_value()
    if value.strip().lower() in PLACEHOLDER_TOKENS or value.strip() == "":
        raise InsecureSettingsError("OO_API_TOKEN is a placeholder; set a real random token")
    if len(value) < MIN_TOKEN_LENGTH:
        raise InsecureSettingsError(
            f"OO_API_TOKEN must be at least {MIN_TOKEN_LENGTH} characters; got {len(value)}"
        )


def _longest_run(value: str) -> int:
    """The longest run of characters that are equal, or each one code point up (or down)."""
    longest = run = 1
    step = 0
    for previous, current in itertools.pairwise(value):
        delta = ord(current) - ord(previous)
        if delta in (-1, 0, 1) and (run == 1 or delta == step):
            run, step = run + 1, delta
        elif delta in (-1, 0, 1):
            run, step = 2, delta
        else:
            run, step = 1, 0
        longest = max(longest, run)
    return longest


def weak_token_reason(value: str) -> str | None:
    """Why `value` is too weak for an API anyone on the network can reach; None if it is not.

    >>> weak_token_reason("changemechangeme")
    'it repeats a shorter string'
    >>> weak_token_reason("abababababcdcdcd")
    'it has 4 different characters; at least 10 needed'
    >>> weak_token_reason("k7Vq2mXp9LrT4wZs8NcB") is None
    True
    """
    if len(value) < MIN_TOKEN_LENGTH:
        return f"it has {len(value)} characters; at least {MIN_TOKEN_LENGTH} needed"
    if (value + value).find(value, 1) < len(value):
        return "it repeats a shorter string"
    distinct = len(set(value))
    if distinct < MIN_DISTINCT_CHARACTERS:
        return f"it has {distinct} different characters; at least {MIN_DISTINCT_CHARACTERS} needed"
    run = _longest_run(value)
    if run > MAX_SEQUENCE_RUN:
        return f"it has a run of {run} equal or consecutive characters"
    lowered = value.lower()
    for word in WEAK_WORDS:
        if word in lowered:
            return f"it contains the word {word!r}"
    return None


def check_bind(host: str, token: SecretStr | None) -> None:
    """Raise `InsecureSettingsError` unless binding `host` with `token` is safe.

    Loopback: no token, or a token that is not a placeholder and has at least 16 characters.
    Any other address: a token, and a strong one (`STRONG_TOKEN_RULE`).
    """
    check_token(token)
    if is_loopback(host):
        return
    if token is None:
        raise InsecureSettingsError(
            f"refusing to bind {host!r} without OO_API_TOKEN: "
            "set a token or bind a loopback address (127.0.0.1, ::1, localhost)"
        )
    reason = weak_token_reason(token.get_secret_value())
    if reason is not None:
        raise InsecureSettingsError(
            f"refusing to bind {host!r} with a weak OO_API_TOKEN ({reason}); "
            f"a token for a non-loopback address needs {STRONG_TOKEN_RULE}"
        )


class Settings(ConnectorSettings):
    """Everything `oo-features serve` and `serving.app.create_app` read."""

    host: str = Field(default="127.0.0.1", description="Address the API binds.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port the API binds.")
    max_body_bytes: int = Field(
        default=16 * 1024,
        ge=1,
        description="Largest request body; a larger one is answered 413 before it is read.",
    )
    api_token: SecretStr | None = Field(
        default=None,
        description="Bearer token every /v1 route requires; unset: no auth, loopback only. "
        "A non-loopback bind needs a strong one (see serving/README.md, Auth).",
    )
    orchestrator_url: str | None = Field(
        default=None,
        description="Base URL of the OpenAI-compatible orchestrator; unset: fallback tips only.",
    )
    orchestrator_model: str = Field(
        default="tip-generator", description="Model alias sent to the orchestrator."
    )
    orchestrator_api_key: SecretStr | None = Field(
        default=None, description="Bearer key sent to the orchestrator, if it needs one."
    )
    orchestrator_timeout_s: float = Field(
        default=3.0, gt=0, description="Timeout of one orchestrator attempt."
    )
    orchestrator_budget_s: float = Field(
        default=5.0,
        gt=0,
        description="Total time for the orchestrator call, retry included; then fallback.",
    )
    orchestrator_retries: int = Field(
        default=1, ge=0, le=3, description="Retries after a timeout, transport error or 5xx."
    )
    breaker_failure_threshold: int = Field(
        default=5, ge=1, description="Consecutive failed calls that open the circuit breaker."
    )
    breaker_cooldown_s: float = Field(
        default=30.0, gt=0, description="Time the breaker stays open before one trial call."
    )
    ready_timeout_s: float = Field(
        default=2.0, gt=0, description="Bound on each readiness check (store, Kafka)."
    )
    store_timeout_s: float = Field(
        default=1.0,
        gt=0,
        description="Longest wait for one store call of a request; then 503 (ADR 0010).",
    )
    ledger_process: bool = Field(
        default=True,
        description="With a Redis store of the API's own: record the tip ledger from a process "
        "of its own, fed by the API (ADR 0053); false: from a thread of the API process.",
    )
    store_concurrency: int = Field(
        default=16, ge=1, description="Threads that may run store calls at once."
    )
    store_breaker_threshold: int = Field(
        default=3, ge=1, description="Consecutive failed store calls that open its breaker."
    )
    store_breaker_cooldown_s: float = Field(
        default=2.0, gt=0, description="Time the store breaker stays open before one trial call."
    )
    freshness_stamper: bool = Field(
        default=True,
        description="Stamp ingested events in the store from the API process (needs Kafka), "
        "so staleness covers users the flow has not caught up on.",
    )
    freshness_window_s: int = Field(
        default=3600,
        gt=0,
        description="Freshness window: users with events ingested within it are active; "
        "lag percentiles use samples written within it.",
    )
    freshness_check_interval_s: float = Field(
        default=10.0, gt=0, description="Period of the background freshness SLA check."
    )
    freshness_objective: float = Field(
        default=0.99,
        gt=0,
        le=1,
        description="An agent breaches when its share of active users within SLA drops below this.",
    )
    feedback_log: Path = Field(
        default=Path(".oo/feedback.jsonl"),
        description="JSONL event log for feedback and deletions when Kafka is not configured.",
    )

    @field_validator("orchestrator_url")
    @classmethod
    def _strip_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return value.strip().rstrip("/")

    @model_validator(mode="after")
    def _safe_exposure(self) -> Settings:
        check_bind(self.host, self.api_token)
        return self
