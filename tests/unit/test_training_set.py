"""`training-set`: each row equals a fresh fold of the user's history filtered to `as_of`
(property test over random logs with late, duplicate and out-of-order events, consent changes
and deletions); deleted users get no row; revoked agents are absent; bad spine lines are named."""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.codec import to_json
from connectors.records import Accepted
from features.registry import REGISTRY
from features.state import UserState
from flows.folding import Pending, build_write
from flows.training_set import SpineError, TrainingReport, agent_row, read_spine, training_set
from proto import events_pb2 as pb
from tests.strategies import ev, event_logs


def iso(ms: int) -> str:
    from connectors.store.ledger import iso_ms

    return iso_ms(ms)


def reference_row(events: list[pb.Event], user_id: str, as_of_ms: int) -> dict[str, Any] | None:
    """A fresh fold of the user's events with occurred_at <= as_of, in log order; the agents
    the user's consents at the end of the whole log allow (from a fold of the whole log)."""
    mine = [Accepted.of(e, 0) for e in events if e.user_id == user_id]
    if any(a.kind == "user_deleted" for a in mine):
        return None
    whole = UserState(user_id)
    Pending().fold(whole, mine)
    consents = whole.consent_map()
    state, pending = UserState(user_id), Pending()
    pending.fold(state, [a for a in mine if a.occurred_ms <= as_of_ms])
    write = build_write(state, pending, computed_at_ms=0)
    agents = {} if write is None else write.agents
    allowed = {
        a
        for a, cls in REGISTRY.items()
        if all(consents.get(c, True) for c in cls.MANIFEST.required_consents)
    }
    return {a: agent_row(agents[a]) for a in sorted(agents) if a in allowed}


def run(events: list[pb.Event], spine: list[dict[str, Any]]) -> tuple[list[dict], TrainingReport]:
    with tempfile.TemporaryDirectory() as tmp:
        log, spine_file = Path(tmp, "events.jsonl"), Path(tmp, "spine.jsonl")
        log.write_text("".join(to_json(e) + "\n" for e in events))
        spine_file.write_text("".join(json.dumps(row) + "\n" for row in spine))
        out = io.StringIO()
        report = training_set(log, spine_file, out)
    return [json.loads(line) for line in out.getvalue().splitlines()], report


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(log=event_logs(), data=st.data())
def test_every_row_is_a_fresh_fold_of_the_history_known_at_its_instant(
    log: list[pb.Event], data: st.DataObject
) -> None:
    users = sorted({e.user_id for e in log})
    times = sorted({e.occurred_at.ToMilliseconds() for e in log})
    if not log:  # a drawn log may be empty: every row is then a user without events
        users, times = ["u1"], [1_750_000_000_000]
    instants = st.one_of(
        st.sampled_from(times),
        st.integers(times[0] - 86_400_000, times[-1] + 86_400_000),
    )
    spine = [
        {"user_id": data.draw(st.sampled_from(users)), "as_of": iso(data.draw(instants))}
        for _ in range(data.draw(st.integers(1, 12)))
    ]
    spine.append({"user_id": users[0], "as_of": iso(times[-1])})

    rows, report = run(log, spine)

    expected = []
    for line in spine:
        from flows.training_set import parse_as_of

        agents = reference_row(log, line["user_id"], parse_as_of(line["as_of"]))
        if agents is not None:
            expected.append({"user_id": line["user_id"], "as_of": line["as_of"], "agents": agents})
    assert rows == expected  # one line per spine line of a user not deleted, in spine order
    assert report.rows + report.rows_left_out == len(spine)


def test_deleted_users_get_no_rows_and_revoked_agents_are_absent() -> None:
    done = [
        ev(f"d{i}", f"2025-03-{i + 1:02d}T09:00:00", "task_completed", user="keep", task_id=f"t{i}")
        for i in range(6)
    ]
    gone = [ev("g1", "2025-03-02T09:00:00", "task_completed", user="gone", task_id="t")]
    later = [
        ev("g2", "2025-03-20T09:00:00", "user_deleted", user="gone"),
        ev("c1", "2025-03-20T09:00:00", "consent_changed", user="keep", consent="tasks"),
    ]
    spine = [
        {"user_id": "keep", "as_of": "2025-03-05T00:00:00Z"},
        {"user_id": "gone", "as_of": "2025-03-05T00:00:00Z"},
        {"user_id": "nobody", "as_of": "2025-03-05T00:00:00Z"},
    ]

    before, _ = run(done + gone, spine)
    after, report = run(done + gone + later, spine)

    assert [r["user_id"] for r in before] == ["keep", "gone", "nobody"]
    assert set(before[0]["agents"]) >= {"momentum", "time-of-day"}
    assert before[2]["agents"] == {}
    # Privacy as of now: the deletion and the revocation came after the as-of instant.
    assert [r["user_id"] for r in after] == ["keep", "nobody"]
    assert after[0]["agents"] == {}  # every agent needs `tasks`
    assert report.rows_left_out == 1


def test_a_bad_spine_names_every_bad_line(tmp_path: Path) -> None:
    spine = tmp_path / "spine.jsonl"
    spine.write_text(
        '{"user_id": "u1", "as_of": "2026-01-01T00:00:00Z"}\n'
        '{"user_id": "u1", "as_of": "2026-01-01T00:00:00"}\n'
        "not json\n"
        '{"user_id": "bad id!", "as_of": "2026-01-01T00:00:00Z"}\n'
        '{"as_of": 5}\n'
    )
    with pytest.raises(SpineError) as caught:
        read_spine(spine)
    message = str(caught.value)
    assert "4 invalid spine line(s)" in message
    for line_no, why in (
        (2, "needs an offset"),
        (3, "Expecting value"),
        (4, "user_id"),
        (5, "user_id"),
    ):
        assert f"spine.jsonl:{line_no}: " in message and why in message


def test_an_event_late_in_the_log_makes_its_rows_fold_afresh_and_stay_exact() -> None:
    log = [
        ev("a", "2025-03-01T10:00:00", "task_completed", task_id="t1"),
        ev("b", "2025-03-01T12:00:00", "task_completed", task_id="t2"),
        ev("c", "2025-03-01T11:00:00", "task_completed", task_id="t3"),  # arrives late
    ]
    spine = [
        {"user_id": "u1", "as_of": "2025-03-01T12:00:00Z"},
        {"user_id": "u1", "as_of": "2025-03-01T11:30:00Z"},
        {"user_id": "u1", "as_of": "2025-03-01T10:00:00Z"},
    ]
    from flows.training_set import parse_as_of

    rows, report = run(log, spine)

    assert report.refolds == 1  # 11:30 folded a and c; 12:00 needs b, which came before c
    assert [r["agents"] for r in rows] == [
        reference_row(log, "u1", parse_as_of(line["as_of"])) for line in spine
    ]
    extras = [r["agents"]["momentum"]["extras"] for r in rows]
    assert extras[0] != extras[2]  # the rows do differ


def test_an_event_whose_fold_raises_is_left_out_and_the_rows_stay_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug in an agent (its fold raises for one event): that event is left out of every row,
    the state is rebuilt as it was before it, and every row equals a fresh fold of the history
    without it; the late events make rows refold from snapshots, one of them through the bad
    event (whose rebuild then starts from that snapshot)."""
    from features.agents import time_of_day
    from flows.training_set import parse_as_of

    original = time_of_day.Agent.apply

    def apply(self: time_of_day.Agent, event: Any, asof: Any) -> bool:
        if event.event_id == "bad":  # the last reader: every other agent folded it already
            raise ZeroDivisionError("a bug in time-of-day")
        return original(self, event, asof)

    monkeypatch.setattr(time_of_day.Agent, "apply", apply)
    log = [
        ev("a", "2025-03-01T09:00:00", "task_completed", task_id="t1"),
        ev("b", "2025-03-01T12:00:00", "task_completed", task_id="t3"),
        ev("bad", "2025-03-01T10:00:00", "task_completed", task_id="t2"),  # arrives late
        ev("c", "2025-03-01T13:00:00", "task_completed", task_id="t4"),
        ev("d", "2025-03-01T11:00:00", "task_completed", task_id="t5"),  # arrives late
    ]
    spine = [
        {"user_id": "u1", "as_of": "2025-03-01T13:00:00Z"},
        {"user_id": "u1", "as_of": "2025-03-01T12:30:00Z"},
        {"user_id": "u1", "as_of": "2025-03-01T10:30:00Z"},
    ]
    without = [e for e in log if e.event_id != "bad"]

    rows, report = run(log, spine)

    # 10:30 folds a and bad; 12:30 adds b before bad (refold from a snapshot after a, through
    # bad); 13:00 adds c before d (refold from a snapshot after bad).
    assert report.refolds == 2
    assert [r["agents"] for r in rows] == [
        reference_row(without, "u1", parse_as_of(line["as_of"])) for line in spine
    ]
    assert rows[0]["agents"]["momentum"]["extras"]["today"] == 4  # a, b, c, d; not bad


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(log=event_logs(max_users=1), data=st.data())
def test_many_rows_over_a_late_log_are_exact_and_pickle_only_what_a_refold_restores(
    log: list[pb.Event], data: st.DataObject
) -> None:
    """Issue 12 (speed without losing exactness): many rows of one user over a log with late
    events. Every row equals a fresh fold of its history, and the state is pickled only for a
    refold that restores it (at most one snapshot a refold), not every few events."""
    import pickle
    from unittest import mock

    from flows import training_set as module
    from flows.training_set import parse_as_of

    times = sorted({e.occurred_at.ToMilliseconds() for e in log}) or [1_750_000_000_000]
    instants = st.one_of(st.sampled_from(times), st.integers(times[0], times[-1]))
    spine = [
        {"user_id": "u1", "as_of": iso(data.draw(instants))}
        for _ in range(data.draw(st.integers(10, 40)))
    ]
    pickles = 0
    real_dumps = pickle.dumps

    def dumps(obj: Any, protocol: int | None = None) -> bytes:
        nonlocal pickles
        # The states the training set keeps (a state pickles its own attributes inside).
        pickles += isinstance(obj, UserState)
        return real_dumps(obj, protocol)

    with mock.patch.object(module.pickle, "dumps", dumps):
        rows, report = run(log, spine)

    expected = [
        {"user_id": line["user_id"], "as_of": line["as_of"], "agents": agents}
        for line in spine
        if (agents := reference_row(log, line["user_id"], parse_as_of(line["as_of"]))) is not None
    ]
    assert rows == expected
    assert pickles <= report.refolds


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(log=event_logs(), data=st.data())
def test_row_agents_are_the_whole_write_of_the_state(
    log: list[pb.Event], data: st.DataObject
) -> None:
    """`row_agents` gives `agent_row` of each allowed agent of `whole_write`, at every prefix
    (cold starts, pinned preferences, revoked consents and deletions included)."""
    from flows.folding import whole_write
    from flows.training_set import row_agents

    allowed = set(data.draw(st.sets(st.sampled_from(sorted(REGISTRY)))))
    states: dict[str, UserState] = {}
    for event in log:
        state = states.setdefault(event.user_id, UserState(event.user_id))
        Pending().fold(state, [Accepted.of(event, 0)])
        write = whole_write(state, computed_at_ms=0)
        views = {} if write is None else write.agents
        expected = {a: agent_row(views[a]) for a in sorted(views) if a in allowed}
        got = row_agents(state, allowed)
        assert got == expected
        assert list(got) == list(expected)
