"""Request and response models of the HTTP API (the `/openapi.json` contract).

Times are given twice: an ISO-8601 UTC string (`2026-05-01T06:30:00.000Z`) for
people and an integer epoch-milliseconds twin (`*_ms`) for programs; the
store keeps milliseconds, so the two never disagree.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer

from connectors.codec import USER_ID_PATTERN

TIP_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
CONTEXT_MAX_CHARS = 500


_EPOCH = dt.datetime(1970, 1, 1)


@lru_cache(maxsize=16_384)
def _iso_minute(minutes: int) -> str:
    """`YYYY-MM-DDTHH:MM` of a minute since the epoch."""
    return (_EPOCH + dt.timedelta(minutes=minutes)).isoformat()[:16]


_SECONDS = [f":{s:02d}." for s in range(60)]
_MILLIS = [f"{ms:03d}Z" for ms in range(1000)]


def iso_ms(epoch_ms: int) -> str:
    """ISO-8601 UTC with milliseconds and a `Z`, in integer arithmetic (exact at any time;
    the minute part is cached and the rest looked up: a batch answer formats thousands of
    times, most within a few hours of each other).

    >>> iso_ms(1_777_617_000_000), iso_ms(-1), iso_ms(1_777_617_059_999)
    ('2026-05-01T06:30:00.000Z', '1969-12-31T23:59:59.999Z', '2026-05-01T06:30:59.999Z')
    """
    minutes, rest = divmod(epoch_ms, 60_000)
    return _iso_minute(minutes) + _SECONDS[rest // 1000] + _MILLIS[rest % 1000]


class ErrorOut(BaseModel):
    detail: str


class HealthOut(BaseModel):
    status: Literal["alive"] = "alive"


class FreshnessReadyOut(BaseModel):
    breaching: list[str] = Field(
        description="Agents whose share of users within SLA is below the objective at the last "
        "check. Informational: a breach does not make the API unready."
    )
    checked_at: str | None = Field(description="Time of the last freshness check; null before.")
    checked_at_ms: int | None
    stamper: str = Field(
        description="Ingestion stamper: `running`, `starting` (waiting for its partitions), "
        "`disabled` (no Kafka or OO_FRESHNESS_STAMPER=false), `stopped`, or `failing: <why>`."
    )


class ReadyOut(BaseModel):
    status: Literal["ready", "not_ready"]
    store: str = Field(description="`ok`, or why the store is not usable.")
    producer: str = Field(
        description="`ok` (Kafka reachable), `disabled` (no Kafka: events go to the "
        "feedback log file), or why Kafka is not reachable."
    )
    reason: str | None = Field(default=None, description="Why not ready; null when ready.")
    freshness: FreshnessReadyOut | None = Field(
        default=None, description="The freshness SLA check's verdict (never affects `status`)."
    )


class ManifestOut(BaseModel):
    id: str
    version: str
    ttl_seconds: int
    freshness_sla_seconds: int
    min_history: int
    required_consents: list[str]
    reads: list[str]
    cold_start: dict[str, Any]
    description: str
    shadows: str | None = None
    """For a shadow: the live agent it shadows."""
    stage: Literal["live", "shadow"] = "live"
    """`shadow` agents are stored and listed but never sent to the orchestrator or used in tips;
    `GET /v1/users/{id}/features?include_shadow=true` returns them."""


class AgentsOut(BaseModel):
    agents: list[ManifestOut]


class DifferenceOut(BaseModel):
    user_id: str
    incumbent: Any
    shadow: Any
    size: float | None = Field(description="|incumbent - shadow| for numbers; null otherwise.")


class ParamAgreementOut(BaseModel):
    compared: int
    agreeing: int
    share: float = Field(description="agreeing / compared (1.0 when nobody was compared).")
    largest: list[DifferenceOut]


class AgreementOut(BaseModel):
    incumbent: str
    shadow: str
    tolerance: float
    users: int = Field(description="Users with both agents stored.")
    users_scanned: int
    truncated: bool = Field(description="More users are stored than `limit` allowed to read.")
    params: dict[str, ParamAgreementOut]


class ParamOut(BaseModel):
    """One parameter; `inferred_value` is present only when the user set the value."""

    value: Any
    source: Literal["inferred", "cold_start", "user"]
    inferred_value: Any = None

    @model_serializer(mode="wrap")
    def _inferred_only_for_user(self, handler: Any) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        if self.source != "user":
            out.pop("inferred_value", None)
        return out


class SnippetOut(BaseModel):
    text: str
    expires_at: str
    expires_at_ms: int


class AgentFeaturesOut(BaseModel):
    version: str
    event_time: str = Field(description="Occurred-at of the newest event folded in (UTC).")
    event_time_ms: int
    ingest_time: str = Field(description="Kafka timestamp of the newest event folded in (UTC).")
    ingest_time_ms: int
    computed_at: str = Field(description="When the flow computed these values (UTC).")
    computed_at_ms: int
    params: dict[str, ParamOut]
    extras: dict[str, Any]
    snippet: SnippetOut | None = Field(description="Null when absent or expired.")


class FeaturesOut(BaseModel):
    user_id: str
    agents: dict[str, AgentFeaturesOut] = Field(
        description="Registered agents the user consented to, by agent id."
    )
    feedback: dict[str, Any] = Field(description="Feedback counters (docs/features.md, Feedback).")


class RecommendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(pattern=USER_ID_PATTERN, examples=["u-42"])
    context: str | None = Field(
        default=None,
        max_length=CONTEXT_MAX_CHARS,
        description="What the user is doing now, in their words (passed to the orchestrator).",
    )


class TipOut(BaseModel):
    tip_id: str
    text: str
    kind: Literal["advice", "todo"]


class RecommendOut(BaseModel):
    tip: TipOut | None
    agents: list[str] = Field(description="Agents whose snippets the tip was built from.")
    fallback: bool = Field(description="True when the tip was built without the orchestrator.")
    fallback_reason: str | None = Field(
        default=None,
        description="Why the fallback was used: orchestrator_not_configured, timeout, "
        "unreachable, http_5xx, http_4xx, garbage, breaker_open, error.",
    )
    reason: str | None = Field(
        default=None, description="Why there is no tip (`no_fresh_snippets`); null with a tip."
    )


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(pattern=USER_ID_PATTERN, examples=["u-42"])
    tip_id: str = Field(pattern=TIP_ID_PATTERN)
    reaction: Literal["done", "like", "dismiss", "snooze"]


class AcceptedOut(BaseModel):
    status: Literal["accepted"] = "accepted"
    event_id: str = Field(description="Id of the event published for this request.")


class DeletedOut(BaseModel):
    status: Literal["accepted"] = "accepted"
    user_id: str
    deleted_at: str
    deleted_at_ms: int
    event_id: str = Field(description="Id of the `UserDeleted` event published.")


class LagOut(BaseModel):
    p50: int | None = Field(description="Median lag (ms); null without samples.")
    p99: int | None = Field(description="99th percentile lag (ms, nearest rank).")
    samples: int = Field(description="Lag samples in the window the percentiles come from.")


class StaleUserOut(BaseModel):
    user_id: str
    staleness_ms: int
    within_sla: bool


class AgentFreshnessOut(BaseModel):
    sla_seconds: int
    lag_ms: LagOut
    users_within_sla: int
    active_users: int = Field(description="Users with an event ingested within the window.")
    compliance: float = Field(description="users_within_sla / active_users (1.0 without any).")
    breaching: bool = Field(
        description="Compliance below the objective at the last background check."
    )
    worst: list[StaleUserOut] = Field(description="The most stale users, most stale first.")


class HistoryAgentOut(BaseModel):
    lag_p50_ms: int | None
    lag_p99_ms: int | None
    compliance: float
    breaching: bool


class HistoryPointOut(BaseModel):
    t: int = Field(description="Time of the check, epoch ms.")
    agents: dict[str, HistoryAgentOut]


class FreshnessOut(BaseModel):
    generated_at: str
    generated_at_ms: int
    window_s: int
    objective: float
    check_interval_s: float
    checked_at_ms: int | None = Field(description="Last background check (breaching verdicts).")
    pending_users: int = Field(description="Active users with events the flow has not written.")
    agents: dict[str, AgentFreshnessOut]
    history: list[HistoryPointOut] = Field(
        description="The background check's points, oldest first."
    )


class UserAgentFreshnessOut(BaseModel):
    lag_ms: int | None = Field(description="computed_at - ingest_time; null before any write.")
    age_ms: int | None = Field(description="now - computed_at; null before any write.")
    staleness_ms: int = Field(
        description="How long the user's newest events have waited; 0 if none."
    )
    within_sla: bool


class UserFreshnessOut(BaseModel):
    user_id: str
    newest_event_ingest_ms: int | None = Field(
        description="Ingest time of the user's newest event (stamped at ingestion)."
    )
    reflected_ingest_ms: int | None = Field(
        description="Ingest time of the newest event the flow has written for the user."
    )
    pending_since_ms: int | None = Field(
        description="Ingest time of the oldest event not written yet; null when up to date."
    )
    agents: dict[str, UserAgentFreshnessOut] = Field(
        description="Registered agents the user consented to, by agent id."
    )


MAX_BATCH_USERS = 1000
# The largest valid batch body (1,000 ids of 128 characters, quoted, with commas) and room.
BATCH_BODY_BYTES = 192 * 1024


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_ids: list[Annotated[str, Field(pattern=USER_ID_PATTERN)]] = Field(
        min_length=1, max_length=MAX_BATCH_USERS, description="1 to 1,000 user ids."
    )


class BatchOut(BaseModel):
    users: dict[str, FeaturesOut | None] = Field(
        description="Every asked user's features, as `GET /v1/users/{id}/features` answers "
        "them; null for an unknown or deleted user. In the order asked, duplicates once."
    )


MAX_INFER_EVENTS = 10_000
MAX_INFER_BYTES = 8 * 1024 * 1024


class InferIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[dict[str, Any]] = Field(
        max_length=MAX_INFER_EVENTS,
        description="Canonical JSON events (as `oo-features produce` reads them) of one user, "
        "in the order the engine should fold them; at most 10,000 and 8 MiB in all.",
    )


class InferredOut(BaseModel):
    version: str
    params: dict[str, ParamOut]
    extras: dict[str, Any]
    snippet: str | None = Field(description="The snippet text as computed (no TTL applies).")


class InferOut(BaseModel):
    agent_id: str
    user_id: str | None = Field(description="The events' user; null without events.")
    events: int = Field(description="Events folded (admitted or dropped by the engine's rules).")
    failed: list[str] = Field(
        default_factory=list,
        description="Event ids whose fold raised (left out, as the flow dead-letters them).",
    )
    features: InferredOut | None = Field(
        description="The agent's parameters and snippet as the engine computes them from these "
        "events; null when it computes none (no event it reads, consent revoked, deleted)."
    )
