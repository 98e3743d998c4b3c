"""Local time of an event, as docs/features.md defines it. Pure arithmetic, no I/O.

Dates are *epoch days* (days since 1970-01-01 in local time) so windows are
integer ranges; weekday is Monday = 0.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

MS_PER_DAY = 86_400_000
MS_PER_HOUR = 3_600_000
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def offset_ms(occurred_ms: int, utc_offset_minutes: int | None, tz: str | None) -> int:
    """The UTC offset that places the event in local time: its own, else the zone's, else 0."""
    if utc_offset_minutes is not None:
        return utc_offset_minutes * 60_000
    if tz is None:
        return 0
    return zone_offset(tz, occurred_ms)


def zone_offset(tz: str, occurred_ms: int) -> int:
    """The offset of zone `tz` at the instant, as `offset_ms` places an event without its own
    (the fold's path for it: an hour without a transition is looked up once per zone)."""
    if tz == "UTC":
        return 0
    same_all_hour = _hour_offset(tz, occurred_ms // MS_PER_HOUR)
    return same_all_hour if same_all_hour is not None else zone_offset_ms(tz, occurred_ms)


def zone_offset_ms(tz: str, instant_ms: int) -> int:
    """The offset of zone `tz` at the instant, from the zone rules."""
    # astimezone, not zone.utcoffset(instant): the latter reads the UTC wall time as local time.
    local = datetime.fromtimestamp(instant_ms / 1000, tz=UTC).astimezone(_zone(tz))
    delta = local.utcoffset() or timedelta(0)
    return int(delta.total_seconds() * 1000)


@lru_cache(maxsize=65_536)
def _hour_offset(tz: str, utc_hour: int) -> int | None:
    """The zone's offset when it is the same from the first to the last millisecond of the UTC
    hour (no transition inside it), else None. Shared by every user of the zone: most events
    of a zone fall in hours already looked up, and a transition hour is computed exactly.
    Sized for a training set, which walks each user through the whole log: 65,536 (zone,
    hour) pairs are 27 zones over 100 days, a few MB."""
    start = utc_hour * MS_PER_HOUR
    first = zone_offset_ms(tz, start)
    return first if zone_offset_ms(tz, start + MS_PER_HOUR - 1) == first else None


def local_day_hour(occurred_ms: int, offset: int) -> tuple[int, int]:
    """(epoch day, hour 0-23) of the event in local time.

    >>> local_day_hour(0, 120 * 60_000)
    (0, 2)
    >>> local_day_hour(0, -60_000)
    (-1, 23)
    """
    local = occurred_ms + offset
    return local // MS_PER_DAY, (local % MS_PER_DAY) // MS_PER_HOUR


def weekday(day: int) -> int:
    """Monday = 0. 1970-01-01 was a Thursday.

    >>> weekday(0)
    3
    """
    return (day + 3) % 7
