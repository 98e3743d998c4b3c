"""When the flow writes a user's folded changes: the flush policy and its defaults.

Pure and import-light (the CLI reads the defaults for its help text). How much the Kafka
source reads at once is the source's own default (`connectors.batching.KAFKA_BATCH_SIZE`).
"""

from __future__ import annotations

CATCHUP_SHARE = 0.25
FLUSH_INTERVAL_S = 0.03
"""Default coalescing of a user's changes while keeping up (`--flush-interval`, ADR 0044)."""
CATCHUP_FLUSH_INTERVAL_S = 10.0
"""Default upper bound of the coalescing while catching up (`--catchup-flush-interval`)."""


def flush_delay_s(behind_s: float, *, flush_s: float, catchup_max_s: float) -> float:
    """How long to coalesce a user's changes before writing them.

    Keeping up (events read within a second of arriving): `flush_s`. Catching up on a
    backlog: a quarter of how far behind the events are, up to `catchup_max_s`; the
    intermediate states would be stale anyway, and one write replaces many. The flow does not
    hold a user's first write in a process this way (`UserLogic`): after a restart the store
    learns at once that the flow is back.

    >>> flush_delay_s(0.2, flush_s=0.03, catchup_max_s=10)
    0.03
    >>> flush_delay_s(8, flush_s=0.03, catchup_max_s=10)
    2.0
    >>> flush_delay_s(600, flush_s=0.03, catchup_max_s=10)
    10
    """
    if behind_s <= 1.0:
        return flush_s
    return min(catchup_max_s, max(flush_s, behind_s * CATCHUP_SHARE))


__all__ = [
    "CATCHUP_FLUSH_INTERVAL_S",
    "FLUSH_INTERVAL_S",
    "flush_delay_s",
]
