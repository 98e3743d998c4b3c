"""Local time of an event: the cached zone offsets equal the zone rules at every minute,
transitions included."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from features.timeutil import MS_PER_HOUR, offset_ms, zone_offset_ms


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


@pytest.mark.parametrize(
    ("tz", "around"),
    [
        ("Europe/Paris", "2026-03-29T01:00:00"),  # spring forward, on the UTC hour
        ("Europe/Paris", "2026-10-25T01:00:00"),  # fall back
        ("Australia/Adelaide", "2026-04-04T16:30:00"),  # +10:30 -> +9:30 at half past a UTC hour
        ("Australia/Lord_Howe", "2026-04-04T15:00:00"),  # a 30-minute DST shift
        ("America/St_Johns", "2026-03-08T05:30:00"),  # -3:30 -> -2:30
        ("Asia/Kolkata", "2026-06-01T00:00:00"),  # no transitions
    ],
)
def test_cached_offsets_equal_the_zone_rules_minute_by_minute(tz: str, around: str) -> None:
    centre = _ms(around)
    for minute in range(-180, 181):
        instant = centre + minute * 60_000
        for within in (0, 1, 59_999):
            at = instant + within
            assert offset_ms(at, None, tz) == zone_offset_ms(tz, at), (tz, at)


def test_a_transition_hour_is_split_exactly() -> None:
    # Adelaide leaves daylight time at 16:30 UTC: the same UTC hour has two offsets.
    hour = _ms("2026-04-04T16:00:00")
    before, after = (
        offset_ms(hour + 29 * 60_000, None, "Australia/Adelaide"),
        offset_ms(hour + 31 * 60_000, None, "Australia/Adelaide"),
    )
    assert (before, after) == (630 * 60_000, 570 * 60_000)
    assert offset_ms(hour + MS_PER_HOUR, None, "Australia/Adelaide") == 570 * 60_000


def test_own_offset_wins_and_utc_is_zero() -> None:
    assert offset_ms(0, -90, "Europe/Paris") == -90 * 60_000
    assert offset_ms(0, None, None) == 0 and offset_ms(0, None, "UTC") == 0
