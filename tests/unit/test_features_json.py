"""The batch read's answer written from the stored JSON (`serving/features_json.py`) equals the
model path's (`features_out(...).model_dump_json()`, the single read's answer) for whatever
the store's write path wrote, and validates against the documented `BatchOut` (ADR 0025)."""

from __future__ import annotations

import dataclasses
import json
import pickle
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.store import AgentWrite, FeatureStore, SQLiteStore, UserWrite
from connectors.store.base import StoredUserBytes
from features.model import Manifest, Param
from features.registry import manifests as registered
from serving.api.models import BatchOut, iso_ms
from serving.api.routes.users import features_out
from serving.features_json import BatchWriter, features_json

NOW = 1_777_617_000_000

LIVE = {m.id: m for m in registered()}
SHADOW = dataclasses.replace(LIVE["momentum"], id="momentum-next", shadows="momentum")
MANIFESTS: dict[str, Manifest] = {**LIVE, SHADOW.id: SHADOW}
AGENTS = sorted([*MANIFESTS, "unregistered"])
CONSENTS = sorted({c for m in LIVE.values() for c in m.required_consents} | {"other"})

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
params = st.dictionaries(
    st.text(min_size=1, max_size=8),
    st.builds(Param, json_values, st.sampled_from(["inferred", "cold_start", "user"]), json_values),
    max_size=4,
)
times = st.integers(min_value=0, max_value=NOW + 10**10)


def momentum_row(snippet: bytes, event_time: bytes = b"5") -> list[bytes]:
    """A stored `momentum` row as the store's readers give it (bytes per field)."""
    return [
        b"momentum",
        b"1.0.0",
        b'{"z":{"value":1,"source":"inferred"}}',
        b"{}",
        event_time,
        b"6",
        b"%d" % (NOW - 1),
        snippet,
    ]


@st.composite
def agent_writes(draw: st.DrawFn, agent_id: str) -> AgentWrite:
    return AgentWrite(
        agent_id=agent_id,
        version=draw(st.sampled_from(["1.0.0", "2.1.0-ß", 'q"uote'])),
        params={name: p.as_dict() for name, p in draw(params).items()},
        extras=draw(st.dictionaries(st.text(max_size=6), json_values, max_size=3)),
        snippet=draw(st.none() | st.text(max_size=40)),
        # Some snippets expired at NOW, some not.
        ttl_seconds=draw(st.sampled_from([1, 60, 7 * 86_400])),
        event_time_ms=draw(times),
        ingest_time_ms=draw(times),
        computed_at_ms=NOW - draw(st.integers(min_value=0, max_value=120_000)),
    )


@st.composite
def user_writes(draw: st.DrawFn, user_id: str) -> UserWrite:
    chosen = draw(st.lists(st.sampled_from(AGENTS), unique=True, max_size=len(AGENTS)))
    return UserWrite(
        user_id=user_id,
        agents={a: draw(agent_writes(a)) for a in chosen},
        feedback=draw(st.none() | st.dictionaries(st.text(max_size=6), json_values, max_size=3)),
        consents=draw(st.none() | st.dictionaries(st.sampled_from(CONSENTS), st.booleans())),
        newest_event_ms=1,
    )


def _stored(writes: list[UserWrite]) -> SQLiteStore:
    store = SQLiteStore(":memory:")
    for w in writes:  # one write per user: the write guard would drop a later computed_at
        store.write_batch([w], now_ms=NOW - 120_000)
    return store


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.integers(min_value=0, max_value=99), unique=True, min_size=1, max_size=4).flatmap(
        lambda ns: st.tuples(*(user_writes(f"u-{n}") for n in ns))
    )
)
def test_the_answer_from_the_stored_json_equals_the_model_answer(writes: tuple[Any, ...]) -> None:
    store = _stored(list(writes))
    check_spliced_equals_model(store, [w.user_id for w in writes])
    store.close()


def check_spliced_equals_model(store: FeatureStore, user_ids: list[str]) -> None:
    """Every user's spliced answer equals the model path's (the single read's), with and
    without shadows, and the batch answer is the documented `BatchOut`, in the order asked."""
    asked = [*user_ids, "nobody"]
    users = store.read_users_bytes(asked, now_ms=NOW)
    for include_shadow in (False, True):
        for user_id, stored in users.items():
            if stored is None:
                continue
            model = features_out(
                stored.decoded(user_id, NOW).parsed(),
                MANIFESTS,
                now_ms=NOW,
                include_shadow=include_shadow,
            ).model_dump_json()
            assert stored.decoded(user_id, NOW).parsed() == store.read_user(user_id, now_ms=NOW)
            fast = features_json(
                user_id, stored, MANIFESTS, now_ms=NOW, include_shadow=include_shadow
            )
            assert json.loads(fast) == json.loads(model), user_id
    text = BatchWriter(MANIFESTS, now_ms=NOW).batch(users)
    assert list(json.loads(text)["users"]) == asked
    checked = BatchOut.model_validate_json(text)  # the documented contract
    assert json.loads(checked.model_dump_json()) == json.loads(text)
    assert checked.users["nobody"] is None


def test_the_parsed_read_is_the_single_read() -> None:
    write = UserWrite(
        "u-1",
        agents={
            "momentum": AgentWrite(
                "momentum",
                "1.0.0",
                {"z": Param(1.5, "user", 0.5).as_dict()},
                {"n": [1]},
                "Keep going.",
                600,
                5,
                6,
                NOW - 1,
            )
        },
        feedback={"tips_shown": 3},
        consents={"tasks": True},
        newest_event_ms=5,
    )
    store = _stored([write])
    assert store.read_users_json(["u-1"], now_ms=NOW)["u-1"].parsed() == store.read_user(  # type: ignore[union-attr]
        "u-1", now_ms=NOW
    )
    store.close()


def test_a_non_finite_stored_value_takes_the_model_path() -> None:
    nan = AgentWrite(
        "momentum",
        "1.0.0",
        {"z": Param(float("nan"), "inferred").as_dict()},
        {"inf": float("inf")},
        "Go.",
        600,
        5,
        6,
        NOW - 1,
    )
    plain = dataclasses.replace(nan, params={"z": Param(1.0, "inferred").as_dict()}, extras={})
    store = _stored(
        [
            UserWrite("u-1", agents={"momentum": nan}, newest_event_ms=5),
            UserWrite("u-2", agents={"momentum": plain}, newest_event_ms=5),
        ]
    )
    users = store.read_users_bytes(["u-1", "u-2"], now_ms=NOW)
    stored = users["u-1"]
    assert stored is not None and b"NaN" in stored.agents[0][2]
    answer = json.loads(features_json("u-1", stored, MANIFESTS, now_ms=NOW))
    assert answer["agents"]["momentum"]["params"]["z"] == {"value": None, "source": "inferred"}
    assert answer["agents"]["momentum"]["extras"] == {"inf": None}
    batch = json.loads(BatchWriter(MANIFESTS, now_ms=NOW).batch(users))["users"]
    assert batch["u-1"] == answer
    assert batch["u-2"]["agents"]["momentum"]["params"]["z"] == {"value": 1.0, "source": "inferred"}
    store.close()


def test_stored_values_of_another_shape_are_rendered_exactly() -> None:
    """Times that are not plain integer digits go through the model path; a snippet stored in
    another shape is parsed and encoded again (neither is what the store's writer writes)."""
    agent = momentum_row(b'{"expires_at_ms":%d,"text":"Go \\"on\\"."}' % (NOW + 1000), b"0005")
    stored = StoredUserBytes(None, None, None, None, [agent])
    model = features_out(stored.decoded("u-1", NOW).parsed(), MANIFESTS, now_ms=NOW)
    answer = json.loads(features_json("u-1", stored, MANIFESTS, now_ms=NOW))
    assert answer == json.loads(model.model_dump_json())
    assert answer["agents"]["momentum"]["event_time_ms"] == 5
    assert answer["agents"]["momentum"]["snippet"]["text"] == 'Go "on".'
    agent[4] = b"5"
    spliced = json.loads(BatchWriter(MANIFESTS, now_ms=NOW).batch({"u-1": stored}))["users"]
    assert spliced["u-1"] == answer


def test_iso_ms_is_integer_exact() -> None:
    assert iso_ms(0) == "1970-01-01T00:00:00.000Z"
    assert iso_ms(1_777_617_000_123) == "2026-05-01T06:30:00.123Z"
    # float division (the old `fromtimestamp(ms / 1000)`) rounded this one to .684
    assert iso_ms(14_571_037_474_685) == "2431-09-27T06:24:34.685Z"
    assert iso_ms(-1) == "1969-12-31T23:59:59.999Z"


@settings(max_examples=300, deadline=None)
@given(st.text(), st.integers(min_value=0, max_value=2**53))
def test_a_stored_snippet_reads_back_exactly(text: str, expires: int) -> None:
    from connectors.store.base import dumps_compact, snippet_of

    assert snippet_of(dumps_compact({"text": text, "expires_at_ms": expires})) == (text, expires)
    assert snippet_of(json.dumps({"expires_at_ms": expires, "text": text})) == (text, expires)


def test_what_is_remembered_across_calls_leaves_freshness_to_each_call() -> None:
    """The ISO forms and snippet expiries kept from one call serve the next (ADR 0033), but a
    snippet fresh in one call is null in a later call made after it expired, and a full
    table is emptied, not trusted."""
    import serving.features_json as fj

    expires = NOW + 1000
    agent = momentum_row(b'{"text":"Go on.","expires_at_ms":%d}' % expires)
    stored = StoredUserBytes(None, None, None, None, [agent])

    def snippet(now_ms: int) -> Any:
        answer = json.loads(BatchWriter(MANIFESTS, now_ms=now_ms).batch({"u-1": stored}))
        return answer["users"]["u-1"]["agents"]["momentum"]["snippet"]

    assert snippet(NOW) == {
        "text": "Go on.",
        "expires_at": iso_ms(expires),
        "expires_at_ms": expires,
    }
    assert fj._EXPIRIES[b"%d}" % expires] == (expires, iso_ms(expires).encode())
    assert snippet(expires) is None
    assert snippet(expires - 1) is not None  # a clock stepping back serves it again
    for n in range(fj._CACHE_LIMIT + 1):
        fj._TIMES[b"x%d" % n] = b""
    assert snippet(NOW) is not None
    assert len(fj._TIMES) < 10


def test_a_kept_answer_is_not_served_once_any_stored_part_differs() -> None:
    """A user's answer is kept with its stored parts as one bytes object (`_stored_key`, ADR
    0050): each part changed alone, a value of another type (`None`, a list row), or the same
    bytes split differently between fields gives the answer written afresh, never the kept one;
    equal parts in new objects (a new read) give the kept one."""
    import serving.features_json as fj

    snippet = b'{"text":"Go on.","expires_at_ms":%d}' % (NOW + 10_000)
    base = momentum_row(snippet)
    other = [b"focus-area", *base[1:7], None]
    stored = StoredUserBytes(b'{"tasks":true}', b'{"a":1}', b"5", b"6", [tuple(base), other])
    variants = [dataclasses.replace(stored, consents_json=None)]
    variants.append(dataclasses.replace(stored, feedback_json=b'{"a":2}'))
    variants.append(dataclasses.replace(stored, agents=[tuple(base)]))
    variants.append(dataclasses.replace(stored, agents=[base, other]))  # a list, not a tuple
    for i in range(1, 8):
        row = list(base)
        row[i] = None if i == 7 else row[i] + b" "
        variants.append(dataclasses.replace(stored, agents=[tuple(row), other]))
    split = [*base[:2], base[2][:-1], base[2][-1:] + base[3], *base[4:]]  # same bytes joined
    variants.append(dataclasses.replace(stored, agents=[tuple(split), other]))
    assert len({fj._stored_key(v) for v in [stored, *variants]}) == 1 + len(variants)
    for variant in variants:
        fj.forget_stored()
        BatchWriter(LIVE, now_ms=NOW).batch({"u-1": stored})  # kept
        kept = BatchWriter(LIVE, now_ms=NOW).batch({"u-1": variant})
        fj.forget_stored()
        assert kept == BatchWriter(LIVE, now_ms=NOW).batch({"u-1": variant})
    fj.forget_stored()
    writer = BatchWriter(LIVE, now_ms=NOW)
    first = writer.user("u-1", stored)
    again = pickle.loads(pickle.dumps(stored))  # equal parts, new objects
    assert again.agents[0][2] is not stored.agents[0][2]
    assert BatchWriter(LIVE, now_ms=NOW).user("u-1", again) is first


def test_what_is_forgotten_stays_forgotten() -> None:
    """`forget_stored` (a user deleted) empties the cross-call tables, and a writer made
    before it (its store read may have fetched the user just before the delete) does not
    put anything back; by age alone the tables are emptied too (a delete this process did
    not see)."""
    import serving.features_json as fj

    agent = momentum_row(b'{"text":"Private words.","expires_at_ms":%d}' % (NOW + 1000))
    stored = StoredUserBytes(None, None, None, None, [agent])
    in_flight = BatchWriter(MANIFESTS, now_ms=NOW)
    fj.forget_stored()
    answer = in_flight.batch({"u-1": stored})
    assert b"Private words." in answer
    assert not fj._SNIPPETS and not fj._TIMES and not fj._EXPIRIES and not fj._STRINGS

    BatchWriter(MANIFESTS, now_ms=NOW).batch({"u-1": stored})
    assert fj._SNIPPETS and fj._TIMES
    fj._born -= fj._CACHE_MAX_AGE_S + 1
    later = BatchWriter(MANIFESTS, now_ms=NOW)
    assert not fj._SNIPPETS and not fj._TIMES
    assert later.batch({"u-1": stored}) == answer


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.tuples(user_writes("u-1"), user_writes("u-1")),
    st.lists(
        st.tuples(
            st.integers(0, 1),
            st.sampled_from([-(10**9), 0, 30_000, 90_000, 10**9]),
            st.booleans(),
            st.booleans(),
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_a_remembered_answer_is_the_answer_written_afresh(
    writes: tuple[UserWrite, UserWrite], calls: list[tuple[int, int, bool, bool]]
) -> None:
    """Whatever a user's stored bytes, the call's `now_ms`, registry and shadow choice, an
    answer served from the cross-call tables (`_ANSWERS` above all, ADR 0036) equals the one
    written with every table emptied first."""
    import serving.features_json as fj

    states = []
    for w in writes:
        store = _stored([w])
        states.append(store.read_users_bytes(["u-1"], now_ms=NOW)["u-1"])
        store.close()
    fj.forget_stored()
    for state, offset, live_only, shadow in calls:
        manifests = LIVE if live_only else MANIFESTS
        users = {"u-1": states[state], "u-2": None}
        now = NOW + offset
        kept = BatchWriter(manifests, now_ms=now, include_shadow=shadow).batch(users)
        saved = (fj._TIMES, fj._STRINGS, fj._EXPIRIES, fj._SNIPPETS, fj._ANSWERS, fj._born)
        fj.forget_stored()
        afresh = BatchWriter(manifests, now_ms=now, include_shadow=shadow).batch(users)
        fj._TIMES, fj._STRINGS, fj._EXPIRIES, fj._SNIPPETS, fj._ANSWERS, fj._born = saved
        assert kept == afresh
