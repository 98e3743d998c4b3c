"""How much the flow reads at once and when it writes a user's folded changes: the defaults.

Pure and import-light (the CLI reads the defaults for its help text).
"""

from __future__ import annotations

KAFKA_BATCH_SIZE = 5000
"""Messages taken from one partition per read (`--batch-size`). A read returns what is there
without waiting for the batch to fill, so this costs no latency when keeping up; when catching
up, larger batches give each user several events per fold call (the 1M-event benchmark ran 1.1x
faster with 5,000 than with 1,000; 10,000 gained little more)."""
CATCHUP_SHARE = 0.25
FLUSH_INTERVAL_S = 0.1
"""Default coalescing of a user's changes while keeping up (`--flush-interval`)."""
CATCHUP_FLUSH_INTERVAL_S = 10.0
"""Default upper bound of the coalescing while catching up (`--catchup-flush-interval`)."""


def flush_delay_s(behind_s: float, *, flush_s: float, catchup_max_s: float) -> float:
    """How long to coalesce a user's changes before writing them.

    Keeping up (events read within a second of arriving): `flush_s`. Catching up on a
    backlog: a quarter of how far behind the events are, up to `catchup_max_s`; the
    intermediate states would be stale anyway, and one write replaces many.

    >>> flush_delay_s(0.2, flush_s=0.1, catchup_max_s=10)
    0.1
    >>> flush_delay_s(8, flush_s=0.1, catchup_max_s=10)
    2.0
    >>> flush_delay_s(600, flush_s=0.1, catchup_max_s=10)
    10
    """
    if behind_s <= 1.0:
        return flush_s
    return min(catchup_max_s, max(flush_s, behind_s * CATCHUP_SHARE))


__all__ = [
    "CATCHUP_FLUSH_INTERVAL_S",
    "FLUSH_INTERVAL_S",
    "KAFKA_BATCH_SIZE",
    "flush_delay_s",
]
