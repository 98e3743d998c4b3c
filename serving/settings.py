"""The serving app's settings: one class, every value from an `OO_*` environment variable.

`Settings` extends the connectors' settings (Kafka, store, prefixes) with what
only the API needs: where it binds, its bearer token, the orchestrator and
the circuit breaker around it, and where feedback goes when Kafka is absent.
`check_bind` is the one rule about exposure: without a token the API binds
loopback only, and a placeholder token is never accepted.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator

from connectors.settings import ConnectorSettings

PLACEHOLDER_TOKENS = frozenset(
    {"changeme", "change-me", "change_me", "changethis", "secret", "token", "password", "test"}
)
MIN_TOKEN_LENGTH = 16


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


def check_bind(host: str, token: SecretStr | None) -> None:
    """Raise `InsecureSettingsError` unless binding `host` with `token` is safe."""
    check_token(token)
    if token is None and not is_loopback(host):
        raise InsecureSettingsError(
            f"refusing to bind {host!r} without OO_API_TOKEN: "
            "set a token or bind a loopback address (127.0.0.1, ::1, localhost)"
        )


class Settings(ConnectorSettings):
    """Everything `oo-features serve` and `serving.app.create_app` read."""

    host: str = Field(default="127.0.0.1", description="Address the API binds.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port the API binds.")
    api_token: SecretStr | None = Field(
        default=None,
        description="Bearer token every /v1 route requires; unset: no auth, loopback only.",
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
