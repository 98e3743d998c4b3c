"""The features answer (`FeaturesOut`) written straight from the stored JSON: the batch path.

`POST /v1/features/batch` answers up to 1,000 users at once. Building a `FeaturesOut` per user
(a pydantic model per parameter, snippet and agent) and serialising it cost tens of
milliseconds per 100 users, almost all of it re-validating what the store's own write path
wrote. Here the answer is assembled as text instead: each agent's `params` and `extras` are
the stored JSON as it is (`StoredAgentJSON`), the rest is formatted once per value.

Contract: for every user, `json.loads(features_json(...))` equals
`json.loads(features_out(user.parsed(), ...).model_dump_json())` (the single read's answer;
`tests/unit/test_features_json.py` checks it on generated users, and that a batch answer
validates against `BatchOut`). That holds because the store's only writer stores each
parameter as `Param.as_dict()` (`{"value", "source"[, "inferred_value"]}` with
`inferred_value` exactly when `source` is `user`: what `ParamOut` serialises). Values the
model path would change are left to it: a user whose stored JSON holds `NaN` or `Infinity`
(pydantic writes them as `null`) is rendered through `FeaturesOut`, so the answer never
differs, only its cost. Eligibility is `serving.tips`'s rule (`consent_granted`), computed
once per distinct set of consents in a call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from json.encoder import encode_basestring

from connectors.store.base import StoredAgentJSON, StoredUserJSON
from features.model import Manifest
from serving.api.models import iso_ms
from serving.tips import consent_granted

__all__ = ["BatchWriter", "features_json"]

_NOT_JSON = ("NaN", "Infinity")
"""Tokens Python's encoder writes for non-finite floats; JSON has none (pydantic: null)."""


def _plain(text: str) -> bool:
    """True when `text` (stored JSON) holds no non-finite float token (a string that merely
    contains one of the words also answers False: the model path is then taken, still exact)."""
    return _NOT_JSON[0] not in text and _NOT_JSON[1] not in text


def _agent_json(a: StoredAgentJSON, now_ms: int) -> str:
    """One agent as `AgentFeaturesOut` serialises it (snippet only while unexpired:
    `serving.tips.is_fresh` with a known expiry)."""
    expires = a.snippet_expires_at_ms
    if a.snippet and expires is not None and now_ms < expires:
        snippet = (
            f'{{"text":{encode_basestring(a.snippet)},"expires_at":"{iso_ms(expires)}",'
            f'"expires_at_ms":{expires}}}'
        )
    else:
        snippet = "null"
    return (
        f'{{"version":{encode_basestring(a.version)},'
        f'"event_time":"{iso_ms(a.event_time_ms)}","event_time_ms":{a.event_time_ms},'
        f'"ingest_time":"{iso_ms(a.ingest_time_ms)}","ingest_time_ms":{a.ingest_time_ms},'
        f'"computed_at":"{iso_ms(a.computed_at_ms)}","computed_at_ms":{a.computed_at_ms},'
        f'"params":{a.params_json},"extras":{a.extras_json},"snippet":{snippet}}}'
    )


class BatchWriter:
    """Features answers of many users against one registry and one `now_ms`; the eligible
    agents of each distinct set of consents are worked out once."""

    def __init__(
        self, manifests: Mapping[str, Manifest], *, now_ms: int, include_shadow: bool = False
    ) -> None:
        self._manifests = manifests
        self._now_ms = now_ms
        self._include_shadow = include_shadow
        self._eligible: dict[tuple[tuple[str, bool], ...], frozenset[str]] = {}

    def _eligible_ids(self, consents: Mapping[str, bool]) -> frozenset[str]:
        key = tuple(sorted(consents.items()))
        ids = self._eligible.get(key)
        if ids is None:
            ids = frozenset(
                agent_id
                for agent_id, m in self._manifests.items()
                if (self._include_shadow or m.shadows is None) and consent_granted(m, consents)
            )
            self._eligible[key] = ids
        return ids

    def user(self, user: StoredUserJSON) -> str:
        """One user's answer, as `GET /v1/users/{id}/features` gives it (JSON text)."""
        ids = self._eligible_ids(user.consents)
        agents = [a for agent_id, a in sorted(user.agents.items()) if agent_id in ids]
        if not (
            _plain(user.feedback_json)
            and all(_plain(a.params_json) and _plain(a.extras_json) for a in agents)
        ):
            return self._through_model(user)
        now = self._now_ms
        body = ",".join(f"{encode_basestring(a.agent_id)}:{_agent_json(a, now)}" for a in agents)
        return (
            f'{{"user_id":{encode_basestring(user.user_id)},"agents":{{{body}}},'
            f'"feedback":{user.feedback_json}}}'
        )

    def _through_model(self, user: StoredUserJSON) -> str:
        from serving.api.routes.users import features_out

        out = features_out(
            user.parsed(), self._manifests, now_ms=self._now_ms, include_shadow=self._include_shadow
        )
        return out.model_dump_json()

    def batch(self, users: Iterable[tuple[str, StoredUserJSON | None]]) -> str:
        """`{"users": {id: answer or null, ...}}` in the order given (`BatchOut`)."""
        parts = [
            f"{encode_basestring(user_id)}:{'null' if user is None else self.user(user)}"
            for user_id, user in users
        ]
        return f'{{"users":{{{",".join(parts)}}}}}'


def features_json(
    user: StoredUserJSON,
    manifests: Mapping[str, Manifest],
    *,
    now_ms: int,
    include_shadow: bool = False,
) -> str:
    """One user's features answer as JSON text (see the module docstring for the contract)."""
    return BatchWriter(manifests, now_ms=now_ms, include_shadow=include_shadow).user(user)
