"""The features answer (`FeaturesOut`) spliced from the stored bytes: the batch path.

`POST /v1/features/batch` answers up to 1,000 users at once. Building a `FeaturesOut` per user
(a pydantic model per parameter, snippet and agent) and serialising it cost tens of
milliseconds per 100 users, almost all of it re-validating what the store's own write path
wrote; decoding the store's reply into text and objects cost as much again. Here the answer is
assembled as bytes from the store's reply as it came (`StoredUserBytes`, ADR 0027): each
agent's `params` and `extras`, the feedback and the head of each snippet (`{"text":"..."`)
are the stored JSON as it is; the times are the stored digits and their ISO form, formatted
once per distinct value in a call; strings are escaped once per distinct value.

Contract: for every user, `json.loads(features_json(...))` equals
`json.loads(features_out(stored.decoded(...).parsed(), ...).model_dump_json())` (the single
read's answer; `tests/unit/test_features_json.py` checks it on generated users through the
real SQLite write path, `tests/integration/test_batch_infer.py` through Redis against the
single read route, and that a batch answer validates against `BatchOut`). That holds because
the store's only writer stores each parameter as `Param.as_dict()` (`{"value", "source"[,
"inferred_value"]}` with `inferred_value` exactly when `source` is `user`: what `ParamOut`
serialises), each time as the decimal digits of an integer and each snippet as
`dumps_compact({"text", "expires_at_ms"})`. Whatever does not fit is left to the model path,
so the answer never differs, only its cost: a user whose stored JSON holds `NaN` or
`Infinity` (pydantic writes them as `null`; found by one scan of the whole answer, then user
by user) or whose times are not plain digits is rendered through `FeaturesOut`; a snippet of
another shape is parsed and re-encoded. Eligibility is `serving.tips`'s rule
(`consent_granted`), computed once per distinct stored consents in a call; a snippet is
served only while `now_ms < expires_at_ms` and its text is not empty (`serving.tips.is_fresh`).

What is a pure function of the stored bytes is remembered across calls, in bounded
module-level tables (emptied when full): the ISO form of each stored time, the JSON literal of
each agent id and version, the parsed expiry of each snippet tail (`_CACHE_LIMIT` entries
each) and the answer of each stored snippet (`_SNIPPETS_LIMIT`). A scheduler asks for the
same users again and again, and most of what they have stored has not moved in between: a
batch of 100 formatted ~700 distinct times per call, every call (ADR 0033). Whether a snippet
is fresh is still decided per call, against its `now_ms`. Each user's whole answer is kept too
(`_ANSWERS`, by user id, `_ANSWERS_LIMIT` users) with what it was written from, and served
again only when the stored bytes it depends on are equal, for the same registry object and
shadow choice, and while every snippet it holds is still fresh (one it left out as expired
keeps it out of the table): writing a user costs ~20-40 µs, comparing its stored bytes a few
(ADR 0036). Those bytes are kept as one object (`_stored_key`, `marshal`'s), so a comparison
reads one contiguous block of kept memory, not ~50 objects scattered over the heap (ADR 0050).

Those tables hold users' data (snippet texts, the times of their events) without their ids, so
a deleted user's entries cannot be picked out: `forget_stored()` empties them all, and the
delete route calls it once the store has deleted the user (deletes are rare; refilling the
tables costs the next batch call a millisecond or two). A user deleted elsewhere (another API
process, a `UserDeleted` event through the flow) is covered by age: the tables are emptied
at least every `_CACHE_MAX_AGE_S` seconds (ADR 0036).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from json.encoder import encode_basestring
from marshal import dumps as _dumps
from operator import itemgetter
from time import monotonic
from typing import Any

from connectors.store.base import StoredUserBytes, snippet_of
from features.model import Manifest
from serving.api.models import iso_ms
from serving.tips import consent_granted

__all__ = ["BatchWriter", "features_json", "forget_stored"]

_NOT_JSON = (b"NaN", b"Infinity")
"""Tokens Python's encoder writes for non-finite floats; JSON has none (pydantic: null)."""

_EMPTY_TEXT = b'{"text":""'
_AGENT = (
    b'%s:{"version":%s,"event_time":"%s","event_time_ms":%s,"ingest_time":"%s","ingest_time_ms":%s,'
    b'"computed_at":"%s","computed_at_ms":%s,"params":%s,"extras":%s,"snippet":%s}'
)
_SNIPPET = b'%s,"expires_at":"%s","expires_at_ms":%s'
_EXPIRES = b',"expires_at_ms":'
_TEXT = b'{"text":"'
_by_agent_id = itemgetter(0)

_CACHE_LIMIT = 50_000
"""Entries each cross-call table may hold before it is emptied (a few MB at most)."""
_TIMES: dict[bytes, bytes] = {}
"""Stored epoch-ms digits -> their ISO form (`iso_ms`), for digits that are an integer's."""
_STRINGS: dict[bytes, bytes] = {}
"""Stored UTF-8 strings (agent ids, versions) -> their JSON string literal."""
_EXPIRIES: dict[bytes, tuple[int, bytes] | None] = {}
"""A stored snippet's tail (`<expires_at_ms>}`) -> (expires_at_ms, its ISO form); None for
another shape."""
_SNIPPETS_LIMIT = 20_000
"""Entries `_SNIPPETS` may hold (a few hundred bytes each) before it is emptied."""
_SNIPPETS: dict[bytes, tuple[int, bytes]] = {}
"""A stored snippet of the writer's shape -> (expires_at_ms, its answer while fresh)."""
_ANSWERS_LIMIT = 5_000
"""Users `_ANSWERS` may hold (their stored bytes and answer, ~8 kB each) before it is emptied."""
_ANSWERS: dict[tuple[int, bool], tuple[Mapping[str, Manifest], dict[str, tuple[Any, ...]]]] = {}
"""(id of the registry, include_shadow) -> (that registry, user id -> (valid until now_ms,
the stored parts it was written from as one bytes object (`_stored_key`), answer)): a user's
answer while its stored bytes match. The registry is held, so its id is not reused while its
answers are here; the entries hold only ints and bytes, which the garbage collector does not
track."""
_FOREVER = 1 << 62


_CACHE_MAX_AGE_S = 60.0
"""The cross-call tables are emptied at least this often, so that what they hold of a user
deleted without this process knowing (another API process took the delete, or the flow
applied a `UserDeleted` event) leaves memory within a minute. Refilling them costs one call
a millisecond or two."""
_born = monotonic()
"""When the cross-call tables were last emptied (`forget_stored`)."""


def forget_stored() -> None:
    """Drop everything the cross-call tables remember of stored values (users' snippet texts
    and times among them): called when a user is deleted, and by age.

    The tables are replaced, not emptied in place: a `BatchWriter` made before the call (its
    store read may have fetched the deleted user just before the deletion) keeps filling the
    old tables, which go with it, so nothing read before a delete survives it here."""
    global _TIMES, _STRINGS, _EXPIRIES, _SNIPPETS, _ANSWERS, _born
    _TIMES, _STRINGS, _EXPIRIES, _SNIPPETS, _ANSWERS = {}, {}, {}, {}, {}
    _born = monotonic()


def _bound_caches() -> None:
    """Empty a cross-call table that has grown past `_CACHE_LIMIT` (a call adds at most a
    few thousand entries to each); empty them all once they are `_CACHE_MAX_AGE_S` old."""
    if monotonic() - _born > _CACHE_MAX_AGE_S:
        forget_stored()
        return
    for table in (_TIMES, _STRINGS, _EXPIRIES):
        if len(table) > _CACHE_LIMIT:
            table.clear()
    if len(_SNIPPETS) > _SNIPPETS_LIMIT:
        _SNIPPETS.clear()
    if len(_ANSWERS) > 8 or sum(len(held[1]) for held in _ANSWERS.values()) > _ANSWERS_LIMIT:
        _ANSWERS.clear()


def _stored_key(stored: StoredUserBytes) -> bytes | None:
    """Everything of `stored` a user's answer is written from (consents, feedback, agent rows)
    as one bytes object, equal for two users exactly when those parts are equal; None when a
    part is not of the types `marshal` writes (never from the stores: then nothing is kept).

    `marshal` (format 2: no back-references, so the bytes do not depend on which objects are
    shared) writes each value with its type and length, and `marshal.loads` gives the value
    back: equal bytes are equal values. Comparing a kept user this way reads one contiguous
    object of a few kB; comparing the ~50 stored values one by one followed ~50 pointers into
    memory that the calls since had pushed out of the caches (~4-12 µs a user, ADR 0050)."""
    parts: Any = (stored.consents_json, stored.feedback_json, tuple(stored.agents))
    try:
        return _dumps(parts, 2)
    except ValueError:
        return None


class _ModelPath(Exception):
    """A stored value the splice cannot render exactly: the user goes through `FeaturesOut`."""


_MEMCHR_TRIES = 32
"""Occurrences of a token's first byte looked at one by one before the plain search."""


def _plain(text: bytes) -> bool:
    """True when `text` (stored JSON, or a whole answer) holds no non-finite float token (a
    string that merely contains one of the words also answers False: the model path is then
    taken, still exact). Each token's first byte is found with `memchr`, which is many times
    faster than the substring search over an answer of hundreds of kilobytes that holds few
    `N` and `I`; past `_MEMCHR_TRIES` of them the substring search takes the rest."""
    for token in _NOT_JSON:
        head = token[:1]
        at = text.find(head)
        for _ in range(_MEMCHR_TRIES):
            if at < 0:
                break
            if text.startswith(token, at):
                return False
            at = text.find(head, at + 1)
        else:
            if token in text[at:]:
                return False
    return True


class BatchWriter:
    """Features answers of many users against one registry and one `now_ms`; what repeats
    within a call (eligible agents per consents, ISO times, escaped strings) is worked out once.
    """

    def __init__(
        self, manifests: Mapping[str, Manifest], *, now_ms: int, include_shadow: bool = False
    ) -> None:
        self._manifests = manifests
        self._now_ms = now_ms
        self._include_shadow = include_shadow
        self._eligible: dict[bytes | None, frozenset[bytes]] = {}
        _bound_caches()
        self._times = _TIMES
        self._strings = _STRINGS
        self._expiries = _EXPIRIES
        self._snippets = _SNIPPETS
        held = _ANSWERS.get((id(manifests), include_shadow))
        if held is None or held[0] is not manifests:
            held = _ANSWERS[id(manifests), include_shadow] = (manifests, {})
        self._answers = held[1]
        self._until = _FOREVER
        """The earliest expiry of the snippets the user being written holds (fresh)."""
        self._lasting = True
        """False once the user being written left a snippet out as expired: not kept."""
        self._check = False
        """Check each user's stored JSON for non-finite floats (set after a whole-answer hit)."""

    def _eligible_ids(self, consents_json: bytes | None) -> frozenset[bytes]:
        ids = self._eligible.get(consents_json)
        if ids is None:
            consents = json.loads(consents_json) if consents_json else {}
            ids = frozenset(
                agent_id.encode()
                for agent_id, m in self._manifests.items()
                if (self._include_shadow or m.shadows is None) and consent_granted(m, consents)
            )
            self._eligible[consents_json] = ids
        return ids

    def _string(self, raw: bytes) -> bytes:
        """A stored UTF-8 string as a JSON string literal."""
        literal = self._strings.get(raw)
        if literal is None:
            literal = encode_basestring(raw.decode()).encode()
            self._strings[raw] = literal
        return literal

    def _time(self, digits: bytes) -> bytes:
        """The ISO form of stored epoch-ms digits (`iso_ms`), remembered; `_ModelPath` unless
        the digits are exactly those of an integer (so they can be spliced as the `_ms` twin)."""
        try:
            ms = int(digits)
        except (TypeError, ValueError):
            raise _ModelPath from None
        if b"%d" % ms != digits:
            raise _ModelPath
        iso = self._times[digits] = iso_ms(ms).encode()
        return iso

    def _expiry(self, tail: bytes) -> tuple[int, bytes] | None:
        """For a stored snippet's tail (`<expires_at_ms>}`): (expires_at_ms, its ISO form),
        None for another shape; remembered (freshness is the caller's, per call)."""
        digits = tail[:-1]
        if tail[-1:] != b"}" or not digits.isdigit() or b"%d" % int(digits) != digits:
            self._expiries[tail] = None
            return None
        expiry = (int(digits), self._times.get(digits) or self._time(digits))
        self._expiries[tail] = expiry
        return expiry

    def _snippet(self, stored: bytes) -> bytes:
        """The answer's snippet object (or `null`) of a stored snippet: its head (`{"text":"..."`,
        a non-empty text holding no quote) spliced as it is, remembered across calls; any other
        shape parsed."""
        known = self._snippets.get(stored)
        if known is not None:
            if self._now_ms < known[0]:
                if known[0] < self._until:
                    self._until = known[0]
                return known[1]
            self._lasting = False
            return b"null"
        head, sep, tail = stored.rpartition(_EXPIRES)
        if sep and len(head) > 10 and head[:9] == _TEXT and head.find(b'"', 9) == len(head) - 1:
            expiries = self._expiries
            expiry = expiries[tail] if tail in expiries else self._expiry(tail)
            if expiry is not None:
                expires, iso = expiry
                answer = _SNIPPET % (head, iso, tail)
                self._snippets[stored] = (expires, answer)
                if self._now_ms < expires:
                    if expires < self._until:
                        self._until = expires
                    return answer
                self._lasting = False
                return b"null"
        text, expires = snippet_of(stored)
        if not text:
            return b"null"
        if self._now_ms >= expires:
            self._lasting = False
            return b"null"
        if expires < self._until:
            self._until = expires
        head = b'{"text":' + encode_basestring(text).encode()
        return _SNIPPET % (head, self._time(b"%d" % expires), b"%d}" % expires)

    def user(self, user_id: str, stored: StoredUserBytes) -> bytes:
        """One user's answer, as `GET /v1/users/{id}/features` gives it (JSON, UTF-8)."""
        if self._check:  # the rare second pass: every user written and checked again
            try:
                return self._user(user_id, stored)
            except _ModelPath:
                return self._through_model(user_id, stored)
        # What the answer is written from, as one bytes object (`_stored_key`): compared in one
        # `memcmp` with the kept one, not object by object (ADR 0050).
        key = _stored_key(stored)
        known = self._answers.get(user_id)
        if known is not None and self._now_ms < known[0] and known[1] == key:
            return known[2]  # type: ignore[no-any-return]
        self._until, self._lasting = _FOREVER, True
        try:
            answer = self._user(user_id, stored)
        except _ModelPath:
            return self._through_model(user_id, stored)
        if self._lasting and key is not None:
            self._answers[user_id] = (self._until, key, answer)
        return answer

    def _user(self, user_id: str, stored: StoredUserBytes) -> bytes:
        ids = self._eligible_ids(stored.consents_json)
        feedback = stored.feedback_json or b"{}"
        check = self._check
        if check and not _plain(feedback):
            raise _ModelPath
        strings, string, times, time = self._strings, self._string, self._times, self._time
        snippet_of_row = self._snippet
        agents = []
        # The hot loop of a batch (hundreds of agents per call): everything looked up once.
        rows = [r for r in stored.agents if r[0] in ids]
        rows.sort(key=_by_agent_id)
        for aid, version, params, extras, et, it, ca, snippet in rows:
            if check and not (_plain(params) and _plain(extras)):
                raise _ModelPath
            agents.append(
                _AGENT
                % (
                    strings.get(aid) or string(aid),
                    strings.get(version) or string(version),
                    times.get(et) or time(et),
                    et,
                    times.get(it) or time(it),
                    it,
                    times.get(ca) or time(ca),
                    ca,
                    params,
                    extras,
                    snippet_of_row(snippet) if snippet else b"null",
                )
            )
        return b'{"user_id":%s,"agents":{%s},"feedback":%s}' % (
            encode_basestring(user_id).encode(),
            b",".join(agents),
            feedback,
        )

    def _through_model(self, user_id: str, stored: StoredUserBytes) -> bytes:
        from serving.api.routes.users import features_out

        out = features_out(
            stored.decoded(user_id, self._now_ms).parsed(),
            self._manifests,
            now_ms=self._now_ms,
            include_shadow=self._include_shadow,
        )
        return out.model_dump_json().encode()

    def _users(self, users: Mapping[str, StoredUserBytes | None]) -> bytes:
        user = self.user
        parts = [b'{"users":{']
        add = parts.append
        for user_id, s in users.items():  # joined once: an answer of 100 users is ~400 kB
            if len(parts) > 1:
                add(b",")
            add(encode_basestring(user_id).encode())
            add(b":")
            add(b"null" if s is None else user(user_id, s))
        add(b"}}")
        return b"".join(parts)

    def batch(self, users: Mapping[str, StoredUserBytes | None]) -> bytes:
        """`{"users": {id: answer or null, ...}}` in the order given (`BatchOut`), UTF-8.

        Written once without looking for non-finite floats; only an answer that holds one of
        their tokens anywhere is written again, user by user checked."""
        self._check = False
        answer = self._users(users)
        if not _plain(answer):
            self._check = True
            answer = self._users(users)
        return answer


def features_json(
    user_id: str,
    stored: StoredUserBytes,
    manifests: Mapping[str, Manifest],
    *,
    now_ms: int,
    include_shadow: bool = False,
) -> bytes:
    """One user's features answer as JSON (see the module docstring for the contract)."""
    writer = BatchWriter(manifests, now_ms=now_ms, include_shadow=include_shadow)
    writer._check = True
    return writer.user(user_id, stored)
