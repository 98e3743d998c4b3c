"""How often a shadow version agrees with the live agent it shadows: per parameter, over users.

Two values of a parameter *agree* when both are numbers (not booleans) within `tolerance`
of each other (absolute), or otherwise are exactly equal (lists, maps, strings). What is
compared is the value the agent inferred: a parameter the user pinned is compared by its
`inferred_value` (both sides would show the pin). Users compared are those for whom both
agents have an output (both enabled, an as-of time); a user whose parameter exists on only
one side counts as disagreeing on it.

Pure: no I/O. `AgreementReport` accumulates users one at a time (offline over a log at
several points, online over a store) and keeps the largest differences per parameter.

>>> report = AgreementReport("momentum", "momentum-14d", tolerance=1e-6)
>>> report.add("u1", {"z": 1.0, "trend": "steady"}, {"z": 1.0000001, "trend": "rising"})
>>> report.add("u2", {"z": 0.5, "trend": "steady"}, {"z": 2.5, "trend": "steady"})
>>> [(p.param, p.agreeing, p.compared) for p in report.params()]
[('trend', 1, 2), ('z', 1, 2)]
>>> report.params()[1].largest[0]
Difference(user_id='u2', incumbent=0.5, shadow=2.5, size=2.0)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_TOLERANCE = 1e-6
LARGEST = 5


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def difference(a: Any, b: Any, tolerance: float) -> float | None:
    """None when `a` and `b` agree; else how far apart (|a - b| for numbers, inf otherwise)."""
    if _number(a) and _number(b):
        gap = abs(float(a) - float(b))
        if gap <= tolerance or (math.isnan(gap) and a != a and b != b):
            return None
        return gap if not math.isnan(gap) else math.inf
    return None if a == b else math.inf


@dataclass(frozen=True, slots=True)
class Difference:
    user_id: str
    incumbent: Any
    shadow: Any
    size: float
    """|incumbent - shadow| for numbers, inf for anything else that differs."""


@dataclass(slots=True)
class ParamAgreement:
    param: str
    compared: int = 0
    agreeing: int = 0
    largest: list[Difference] = field(default_factory=list)
    """The largest differences, largest first (ties: smaller user id first)."""

    @property
    def share(self) -> float:
        """Agreeing users / compared users (1.0 when nobody was compared)."""
        return self.agreeing / self.compared if self.compared else 1.0


class AgreementReport:
    """Agreement of `shadow` with `incumbent`, accumulated user by user."""

    def __init__(
        self,
        incumbent: str,
        shadow: str,
        *,
        tolerance: float = DEFAULT_TOLERANCE,
        largest: int = LARGEST,
    ) -> None:
        if tolerance < 0:
            raise ValueError(f"tolerance must be >= 0; got {tolerance}")
        self.incumbent = incumbent
        self.shadow = shadow
        self.tolerance = tolerance
        self.users = 0
        self._largest = largest
        self._params: dict[str, ParamAgreement] = {}
        self._diffs: dict[str, list[Difference]] = {}

    def add(self, user_id: str, incumbent: dict[str, Any], shadow: dict[str, Any]) -> None:
        """One user's inferred values of both agents (param -> value)."""
        self.users += 1
        missing = object()
        for param in sorted(incumbent.keys() | shadow.keys()):
            a, b = incumbent.get(param, missing), shadow.get(param, missing)
            agg = self._params.setdefault(param, ParamAgreement(param))
            agg.compared += 1
            size = None if a is not missing and b is not missing else math.inf
            if size is None:
                size = difference(a, b, self.tolerance)
            if size is None:
                agg.agreeing += 1
                continue
            self._diffs.setdefault(param, []).append(
                Difference(user_id, None if a is missing else a, None if b is missing else b, size)
            )

    def params(self) -> list[ParamAgreement]:
        """Every parameter's agreement, by name, with its largest differences."""
        out = []
        for param in sorted(self._params):
            agg = self._params[param]
            diffs = self._diffs.get(param, [])
            agg.largest = sorted(diffs, key=lambda d: (-d.size, d.user_id))[: self._largest]
            out.append(agg)
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "incumbent": self.incumbent,
            "shadow": self.shadow,
            "tolerance": self.tolerance,
            "users": self.users,
            "params": {
                p.param: {
                    "compared": p.compared,
                    "agreeing": p.agreeing,
                    "share": p.share,
                    "largest": [
                        {
                            "user_id": d.user_id,
                            "incumbent": d.incumbent,
                            "shadow": d.shadow,
                            "size": None if math.isinf(d.size) else d.size,
                        }
                        for d in p.largest
                    ],
                }
                for p in self.params()
            },
        }


def inferred_values(params: dict[str, Any]) -> dict[str, Any]:
    """param -> the inferred value, from `Param` objects or their stored dicts."""
    out = {}
    for name, p in params.items():
        d = p if isinstance(p, dict) else p.as_dict()
        out[name] = d.get("inferred_value") if d.get("source") == "user" else d.get("value")
    return out


def incumbent_of(shadow: str) -> str:
    """The live agent `shadow` shadows; ValueError naming the registered shadows otherwise."""
    from features.registry import REGISTRY, agent_ids

    shadows = [a for a in agent_ids() if REGISTRY[a].MANIFEST.shadows]
    if shadow not in REGISTRY:
        raise ValueError(
            f"agent {shadow!r} is not registered; registered shadows: {shadows or 'none'} "
            "(a shadow's package must be importable and named in OO_AGENT_PACKAGES)"
        )
    target = REGISTRY[shadow].MANIFEST.shadows
    if target is None:
        raise ValueError(f"agent {shadow!r} is live, not a shadow; registered shadows: {shadows}")
    return target


def agreement_of_states(
    states: Iterable[Any], shadow: str, *, tolerance: float = DEFAULT_TOLERANCE
) -> AgreementReport:
    """Agreement over `UserState`s (users where both agents have an output)."""
    incumbent = incumbent_of(shadow)
    report = AgreementReport(incumbent, shadow, tolerance=tolerance)
    for state in states:
        outs = state.outputs([incumbent, shadow])
        if incumbent in outs and shadow in outs:
            report.add(
                state.user_id,
                inferred_values(outs[incumbent].params),
                inferred_values(outs[shadow].params),
            )
    return report


def agreement_along(
    events: Sequence[Any], shadow: str, *, points: int = 0, tolerance: float = DEFAULT_TOLERANCE
) -> list[tuple[int, AgreementReport]]:
    """Fold `events` (validated, in log order) and evaluate agreement at `points` evenly spaced
    points along the log and at its end: [(events folded, report)], the end last."""
    from features.model import Incoming
    from features.state import UserState

    if points < 0:
        raise ValueError(f"points must be >= 0; got {points}")
    incumbent_of(shadow)
    total = len(events)
    marks = sorted({round(k * total / (points + 1)) for k in range(1, points + 1)} - {0, total})
    marks.append(total)
    states: dict[str, UserState] = {}
    out = []
    done = 0
    for mark in marks:
        for event in events[done:mark]:
            state = states.get(event.user_id)
            if state is None:
                state = states[event.user_id] = UserState(event.user_id)
            state.apply(Incoming.of(event))
        done = mark
        out.append((mark, agreement_of_states(states.values(), shadow, tolerance=tolerance)))
    return out
