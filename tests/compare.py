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
