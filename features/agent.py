"""What an agent is: a manifest, a small bounded state, `apply`, `infer` and `snippet`.

An agent module under `features/agents/` exposes `MANIFEST` (a `Manifest`)
and `Agent` (a subclass of `AgentBase`). The registry finds it; nothing else
names it. Agents never see a protobuf envelope: `UserState` resolves admission
and local time once and hands them a `Folded` event.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from features.model import Manifest, Param


@dataclass(slots=True)
class Folded:
    """An admitted event, already placed in the user's local time (read-only by convention:
    not frozen, because a frozen dataclass costs a microsecond an event to build)."""

    kind: str
    """The payload oneof name, e.g. ``task_completed``."""
    event_id: str
    occurred_ms: int
    day: int
    """Local epoch day."""
    hour: int
    """Local hour, 0-23."""
    seq: int
    """Admission order within the user (ties in event time go to the later admission)."""
    payload: Any
    """The payload message (read-only): read its fields, `HasField` and `WhichOneof` only. The
    backfill hands a plain message that reads alike, not a protobuf one (ADR 0054)."""


@dataclass(slots=True)
class AsOf:
    """The user-level context an inference is computed at."""

    day: int
    """D: local epoch day of the latest signal event."""
    watermark_ms: int
    """occurred_at of the latest signal event."""
    tz: str | None
    """Profile time zone (IANA), None when never set."""


@dataclass(slots=True)
class Inference:
    """What `infer` returns: inferred values (None = the agent's data guard failed) and extras.

    A parameter missing from `values` (or None in it) keeps its cold-start value.
    """

    values: dict[str, Any] | None
    extras: dict[str, Any]
    context: dict[str, Any] = field(default_factory=dict)
    """Parameters that are never inferred (e.g. the profile `tz`): their value, source `cold_start`."""


PRUNE_EVERY_DAYS = 7


def drop_below(
    buckets: dict[Any, Any], floor: int, key: Callable[[Any], int] | None = None
) -> None:
    """Delete, in place, the entries of `buckets` whose key (or `key(k)`) is below `floor`: the
    one pruning step of every agent's `on_asof` (buckets of days or hours no window needs).

    >>> per_day = {3: 1, 9: 2, 12: 1}
    >>> drop_below(per_day, 9)
    >>> per_day
    {9: 2, 12: 1}
    >>> cells = {(3, "home"): 1, (10, "work"): 2}
    >>> drop_below(cells, 9, key=lambda cell: cell[0])
    >>> cells
    {(10, 'work'): 2}
    """
    if key is None:
        old = [k for k in buckets if k < floor]
    else:
        old = [k for k in buckets if key(k) < floor]
    for k in old:
        del buckets[k]


class AgentBase:
    """Base class of every agent's per-user state. Subclasses must stay picklable and bounded."""

    MANIFEST: ClassVar[Manifest]

    def apply(self, event: Folded, asof: AsOf) -> bool:
        """Fold one admitted event; return True when the agent's view may have changed."""
        raise NotImplementedError

    def infer(self, asof: AsOf, preferences: dict[str, Any]) -> Inference:
        """The agent's parameters as of `asof` (see docs/features.md).

        `preferences` are the user's pinned values, for extras that depend on an
        effective parameter (e.g. overdue tasks use the pinned tolerance).
        """
        raise NotImplementedError

    def snippet(self, params: dict[str, Param], extras: dict[str, Any]) -> str:
        """One short sentence for the orchestrator from the effective parameters."""
        raise NotImplementedError

    def on_asof(self, asof: AsOf) -> bool:
        """The user's as-of moved; drop what no window can need. Return True if the view changed."""
        return True

    def _prune_due(self, asof: AsOf) -> bool:
        """Whether `on_asof` should drop old buckets now: once a week of local days is enough,
        since every window filters its days explicitly (needs a `_pruned_day` slot)."""
        last = getattr(self, "_pruned_day", None)
        if last is not None and abs(asof.day - last) < PRUNE_EVERY_DAYS:
            return False
        self._pruned_day = asof.day
        return True

    def on_watermark(self, asof: AsOf) -> bool:
        """The watermark moved within the same local day. Return True if the view changed."""
        return False

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and _state(self) == _state(other)

    __hash__ = None  # type: ignore[assignment]


def _state(obj: object) -> dict[str, Any]:
    # Slots of the whole class chain: a subclass (e.g. a shadow version) may add none.
    slots = [n for cls in type(obj).__mro__ for n in vars(cls).get("__slots__", ())]
    if slots:
        # Underscored slots are caches, not state.
        return {name: getattr(obj, name) for name in slots if not name.startswith("_")}
    return dict(vars(obj))
