"""A user's state as it is pickled (recovery snapshots, rebuild bases, training-set origins):
small, whole, and readable from the layout before ADR 0060.

Issue 3's size target: a user with a year of history (about 3,000 events over 10 projects)
pickles to under 16 KB, and no more than the spec's windows need.
"""

from __future__ import annotations

import copyreg
import io
import pickle
import zlib
from typing import Any

from features.agents import overdue_task
from features.model import Incoming
from features.state import UserState
from oo_features.generate import generate_events

YEAR_USER = "u00004"
"""`bench/state_size.py`'s user for seed 7: the busiest of the first generator users."""


def _year_of(user_id: str) -> UserState:
    index = int(user_id[1:])
    state = UserState(user_id)
    for event in generate_events(index + 1, 365, 7):
        if event.user_id == user_id:
            state.apply(Incoming.of(event))
    return state


def test_a_year_of_a_busy_user_pickles_under_16_kb() -> None:
    state = _year_of(YEAR_USER)
    assert state.seq > 3_000, "a year of a busy user"
    assert len(state.agents["overdue-task"].project_names) >= 8
    size = len(pickle.dumps(state, pickle.HIGHEST_PROTOCOL))
    assert size < 16 * 1024, f"{size:,} bytes"


def test_the_pickle_round_trips_to_an_equal_state() -> None:
    state = _year_of(YEAR_USER)
    again = pickle.loads(pickle.dumps(state, pickle.HIGHEST_PROTOCOL))
    assert again == state
    assert vars(again).keys() == vars(state).keys()
    assert again.outputs() == state.outputs()


def _previous_layout(state: UserState) -> bytes:
    """`state` pickled as before ADR 0060: the plain attribute dict, overdue-task's two integer
    columns compressed one by one with zlib."""

    def reduce_state(s: UserState) -> tuple[Any, ...]:
        return (UserState.__new__, (UserState,), dict(vars(s)))

    def reduce_overdue(a: overdue_task.Agent) -> tuple[Any, ...]:
        attrs = a.__getstate__()
        attrs["occ"] = zlib.compress(a.occ.tobytes(), 1)
        attrs["late"] = zlib.compress(a.late.tobytes(), 1)
        return (overdue_task.Agent.__new__, (overdue_task.Agent,), attrs)

    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = copyreg.dispatch_table.copy()
    pickler.dispatch_table[UserState] = reduce_state
    pickler.dispatch_table[overdue_task.Agent] = reduce_overdue
    pickler.dump(state)
    return buffer.getvalue()


def test_a_state_pickled_in_the_previous_layout_loads_equal() -> None:
    state = _year_of(YEAR_USER)
    blob = _previous_layout(state)
    assert b"zstandard" not in blob and len(blob) > 16 * 1024, "the old, larger layout"
    again = pickle.loads(blob)
    assert again == state
    assert again.outputs() == state.outputs()
