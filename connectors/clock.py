"""The engine's one clock: wall-clock time as integer UTC epoch milliseconds.

Every "now" outside `features/` comes from here (features stay clock-free: they are handed
times). Never fails; it reads the system clock, so two calls may go backwards if the clock
is stepped.

>>> isinstance(now_ms(), int) and now_ms() > 1_700_000_000_000
True
"""

from __future__ import annotations

import time

__all__ = ["now_ms"]


def now_ms() -> int:
    """Now, as UTC epoch milliseconds."""
    return time.time_ns() // 1_000_000
