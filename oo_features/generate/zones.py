"""Time zones and draws for the simulated people: the zones users live in, their offsets
per local day (DST included), and the small random draws (Poisson counts, activity hours)."""

from __future__ import annotations

import datetime as dt
import itertools
import math
import random
import zoneinfo
from functools import cache, lru_cache

# (zone, weight)
_ZONES: tuple[tuple[str, int], ...] = (
    ("Europe/Berlin", 12),
    ("America/New_York", 12),
    ("Europe/London", 8),
    ("America/Los_Angeles", 8),
    ("Europe/Paris", 5),
    ("America/Chicago", 5),
    ("Asia/Tokyo", 5),
    ("Asia/Kolkata", 5),
    ("America/Sao_Paulo", 4),
    ("Asia/Shanghai", 4),
    ("Asia/Singapore", 3),
    ("Australia/Sydney", 3),
    ("America/Denver", 2),
    ("America/Mexico_City", 2),
    ("Africa/Lagos", 2),
    ("UTC", 2),
    ("Pacific/Auckland", 1),
    ("Africa/Johannesburg", 1),
    ("Asia/Kathmandu", 1),
    ("America/St_Johns", 1),
    ("Asia/Dubai", 1),
)
_ZONE_NAMES = tuple(z for z, _ in _ZONES)
_ZONE_CW = tuple(itertools.accumulate(w for _, w in _ZONES))


# --------------------------------------------------------------------------- time zones


@cache
def _zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


@lru_cache(maxsize=65_536)
def _day_offsets(name: str, ordinal: int) -> tuple[int, int]:
    """The zone's UTC offset (minutes) at the start and at the end of a local date."""
    z = _zone(name)
    d = dt.date.fromordinal(ordinal)
    a = dt.datetime(d.year, d.month, d.day, tzinfo=z).utcoffset()
    b = dt.datetime(d.year, d.month, d.day, 23, 59, 59, tzinfo=z).utcoffset()
    assert a is not None and b is not None
    return int(a.total_seconds()) // 60, int(b.total_seconds()) // 60


def _exact(name: str, ordinal: int, sec: int) -> tuple[int, int]:
    """(epoch seconds, offset minutes) of local wall time `sec` after midnight of a date."""
    z = _zone(name)
    d = dt.date.fromordinal(ordinal)
    local = dt.datetime(d.year, d.month, d.day, tzinfo=z) + dt.timedelta(seconds=sec)
    ts = int(local.timestamp())
    off = dt.datetime.fromtimestamp(ts, z).utcoffset()
    assert off is not None
    return ts, int(off.total_seconds()) // 60


def _poisson(rng: random.Random, lam: float) -> int:
    limit = math.exp(-lam)
    k = 0
    p = rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _hour_cw(rng: random.Random, wake: int, sleep: int, peaks: list[tuple[float, float, float]]):
    """Cumulative weights over local hours 0-23: near zero while asleep, peaks while awake."""
    weights = []
    for h in range(24):
        awake = (h - wake) % 24 < (sleep - wake) % 24
        if not awake:
            weights.append(0.004)
            continue
        w = 0.12
        for center, sd, amp in peaks:
            dist = min(abs(h + 0.5 - center), 24 - abs(h + 0.5 - center))
            w += amp * math.exp(-0.5 * (dist / sd) ** 2)
        weights.append(w)
    return tuple(itertools.accumulate(weights))
