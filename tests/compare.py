"""Compare stored features with the reference, floats to 1e-9, naming the first difference."""

from __future__ import annotations

import math
from typing import Any


def close(a: Any, b: Any, *, tol: float = 1e-9) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=tol, abs_tol=tol)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], tol=tol) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(close(x, y, tol=tol) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def differences(
    stored: dict[str, dict[str, Any]], expected: dict[str, dict[str, Any]], *, where: str
) -> list[str]:
    """Every agent/param where `stored` and `expected` (agent -> name -> value) disagree."""
    out: list[str] = []
    for agent in sorted(stored.keys() | expected.keys()):
        if agent not in stored or agent not in expected:
            out.append(
                f"{where} agent {agent}: stored={agent in stored} expected={agent in expected}"
            )
            continue
        for name in sorted(stored[agent].keys() | expected[agent].keys()):
            got, want = stored[agent].get(name), expected[agent].get(name)
            if not close(got, want):
                out.append(f"{where} {agent}.{name}: stored {got!r} != expected {want!r}")
    return out


def view_differences(ref: dict[str, Any], view: dict[str, Any], reborn: set[str]) -> list[str]:
    """Every way a stored view (`user -> {"params", "extras", "feedback"}` or None) differs
    from the reference (`tests.reference.reference_features`): deleted users must be gone,
    parameters and extras equal, feedback counters equal except for users deleted and reborn
    (signals and feedback travel on two topics, so across a deletion their relative order is
    not kept: see features/README.md)."""
    problems: list[str] = []
    for user_id, expected in sorted(ref.items()):
        got = view[user_id]
        if expected.deleted or not expected.params:
            if expected.deleted and got is not None:
                problems.append(f"user {user_id} is deleted but the store still has it")
            continue
        if got is None:
            problems.append(f"user {user_id}: nothing stored")
            continue
        problems += differences(got["params"], expected.params, where=f"user {user_id} params")
        problems += differences(got["extras"], expected.extras, where=f"user {user_id} extras")
        if user_id not in reborn:
            problems += differences(
                {"feedback": got["feedback"]}, {"feedback": expected.feedback}, where=user_id
            )
    return problems
