"""Hand-worked examples that prove the reference (`tests/reference.py`) reads docs/features.md right.

Every expected value below was computed by hand from the contract's text (the
arithmetic is in the comments), not by running the reference. The anchor day
is Monday 2025-03-10 unless a test says otherwise.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from tests.reference import COLD_START, RefUser, reference_features
from tests.strategies import ev, ts_s

D = "2025-03-10"


def user(events: list[Any], uid: str = "u1") -> RefUser:
    return reference_features(events)[uid]


def done(i: int | str, at: str, **fields: Any) -> Any:
    fields.setdefault("task_id", f"t{i}")
    return ev(f"d{i}", at, "task_completed", **fields)


def values(u: RefUser, agent: str) -> dict[str, Any]:
    return {k: p["value"] for k, p in u.params[agent].items()}


def sources(u: RefUser, agent: str) -> dict[str, str]:
    return {k: p["source"] for k, p in u.params[agent].items()}


# ------------------------------------------------------------------ time-of-day


def test_time_of_day_inferred_from_ten_done_events() -> None:
    # 4 at 09h, 3 at 10h, 2 at 14h, 1 at 20h (UTC, no profile) = 10 events.
    hours = [9] * 4 + [10] * 3 + [14] * 2 + [20]
    u = user([done(i, f"2025-03-{1 + i:02d}T{h:02d}:15:00") for i, h in enumerate(hours)])
    tod = u.params["time-of-day"]
    expected_hist = [0] * 24
    expected_hist[9], expected_hist[10], expected_hist[14], expected_hist[20] = 4, 3, 2, 1
    assert u.extras["time-of-day"]["hist"] == expected_hist
    # baseline 10/24; below = every empty hour; runs 21..8 (12 h), 15..19 (5), 11..13 (3).
    assert values(u, "time-of-day") == {
        "preferred_hour": 9,
        "quiet_start": 21,
        "quiet_end": 9,
        # q75 of 20 zeros and 1,2,3,4: position 0.75*23 = 17.25 -> 0; so every non-zero hour.
        "peak_hours": [9, 10, 14, 20],
        "tz": "UTC",
    }
    assert tod["tz"]["source"] == "cold_start"
    assert tod["preferred_hour"]["source"] == "inferred"
    assert tod["quiet_start"]["source"] == "inferred"


def test_time_of_day_guard_nine_events_is_cold_start_but_hist_is_kept() -> None:
    u = user([done(i, f"2025-03-0{1 + i}T08:00:00") for i in range(9)])
    assert u.params["time-of-day"] == {
        k: {"value": v, "source": "cold_start"} for k, v in COLD_START["time-of-day"].items()
    }
    assert u.extras["time-of-day"]["hist"][8] == 9


def test_time_of_day_ties_and_peaks_by_percentile() -> None:
    # 5 at 08h, 5 at 15h, 2 at 03h: preferred is the lowest of the tied hours (8).
    hours = [8] * 5 + [15] * 5 + [3] * 2
    u = user([done(i, f"2025-03-{1 + i:02d}T{h:02d}:00:00") for i, h in enumerate(hours)])
    v = values(u, "time-of-day")
    assert v["preferred_hour"] == 8
    # Below-baseline runs (baseline 0.5): 4..7 (4), 9..14 (6), 16..2 (11 wrapping) -> 16..2.
    assert (v["quiet_start"], v["quiet_end"]) == (16, 3)
    assert v["peak_hours"] == [3, 8, 15]


def test_time_of_day_equal_runs_take_smallest_first_hour() -> None:
    # Events at 0,6,12,18 (x3 each = 12): runs 1..5, 7..11, 13..17, 19..23 all 5 long -> 1..5.
    hours = [0, 6, 12, 18] * 3
    u = user([done(i, f"2025-03-{1 + i:02d}T{h:02d}:30:00") for i, h in enumerate(hours)])
    v = values(u, "time-of-day")
    assert (v["quiet_start"], v["quiet_end"]) == (1, 6)
    assert v["preferred_hour"] == 0


def test_time_of_day_flat_hist_keeps_quiet_cold_start() -> None:
    # One done event per hour: baseline 1, nothing below it; q75 = 1 so every hour is a peak.
    u = user([done(h, f"2025-03-0{1 + h % 5}T{h:02d}:00:00") for h in range(24)])
    assert values(u, "time-of-day") == {
        "preferred_hour": 0,
        "quiet_start": 22,
        "quiet_end": 7,
        "peak_hours": list(range(24)),
        "tz": "UTC",
    }
    assert sources(u, "time-of-day") == {
        "preferred_hour": "inferred",
        "quiet_start": "cold_start",
        "quiet_end": "cold_start",
        "peak_hours": "inferred",
        "tz": "cold_start",
    }


def test_time_of_day_window_is_last_28_local_days() -> None:
    # D = 2025-03-10 (latest signal). D-27 = 02-11 is in, D-28 = 02-10 is out.
    # Both old ones arrive first (they would be too late after the others).
    evs = [done("out", "2025-02-10T23:59:59"), done("in", "2025-02-11T00:00:00")]
    evs += [done(i, f"{D}T10:00:00") for i in range(9)]
    u = user(evs)
    assert sum(u.extras["time-of-day"]["hist"]) == 10
    assert u.extras["time-of-day"]["hist"][0] == 1


def test_local_time_from_offset_then_profile_then_utc() -> None:
    evs = [
        ev("p", "2025-03-01T00:00:00", "profile_updated", tz="Asia/Kathmandu"),
        # 23:30 UTC with +60 -> 00:30 next day.
        done("off", "2025-03-05T23:30:00", offset=60),
        # 03:20 UTC in Kathmandu (+5:45) -> 09:05.
        *[done(i, f"2025-03-0{2 + i % 7}T03:20:00") for i in range(9)],
    ]
    u = user(evs)
    hist = u.extras["time-of-day"]["hist"]
    assert hist[0] == 1 and hist[9] == 9
    assert values(u, "time-of-day")["tz"] == "Asia/Kathmandu"
    assert u.params["time-of-day"]["tz"]["source"] == "cold_start"


def test_time_zone_is_the_one_in_effect_at_admission() -> None:
    evs = [
        done("a", "2025-03-02T20:00:00"),  # admitted before any profile: UTC -> 20h
        ev("p", "2025-03-01T00:00:00", "profile_updated", tz="Asia/Kolkata"),
        done("b", "2025-03-02T20:00:00"),  # Kolkata +5:30 -> 01:30 next day
        # An older profile arriving later does not replace the newer one.
        ev("p0", "2025-02-01T00:00:00", "profile_updated", tz="America/New_York"),
        done("c", "2025-03-02T21:00:00"),  # still Kolkata -> 02:30
    ]
    u = user(evs)
    hist = u.extras["time-of-day"]["hist"]
    assert (hist[20], hist[1], hist[2]) == (1, 1, 1)
    assert values(u, "time-of-day")["tz"] == "Asia/Kolkata"


def test_profile_update_is_placed_with_the_zone_before_it() -> None:
    # The latest signal is the profile update at 2025-03-10T20:00Z: placed in UTC (no zone
    # before it) it is on 03-10; placed in Auckland (+13) it would be 03-11.
    evs = [
        done(1, "2025-03-10T09:00:00"),
        ev("p", "2025-03-10T20:00:00", "profile_updated", tz="Pacific/Auckland"),
    ]
    u = user(evs)
    assert u.as_of_date is not None and u.as_of_date.isoformat() == "2025-03-10"
    assert u.extras["momentum"]["today"] == 1


def test_as_of_is_latest_signal_event_and_ties_keep_the_first() -> None:
    evs = [
        done(1, "2025-03-10T23:00:00", offset=0),  # local 03-10
        done(2, "2025-03-10T23:00:00", offset=120),  # same instant, local 03-11: not the as-of
        ev("tip", "2025-03-20T00:00:00", "tip_shown", tip_id="x", agent_ids=["momentum"]),
    ]
    u = user(evs)
    assert u.watermark_ms == ts_s("2025-03-10T23:00:00") * 1000
    assert u.as_of_date.isoformat() == "2025-03-10"  # feedback sets no watermark
    # The event on local 03-11 is after D: in no window.
    assert u.extras["momentum"]["today"] == 1
    assert sum(u.extras["time-of-day"]["hist"]) == 1


# --------------------------------------------------------------------- momentum


def test_momentum_baseline_from_first_done_date() -> None:
    # Baseline days D-7..D-1 with counts 1,2,3,1,2,3,2 (mean 2), today 5.
    counts = [1, 2, 3, 1, 2, 3, 2]
    evs, n = [], 0
    for back, c in zip(range(7, 0, -1), counts, strict=True):
        for _ in range(c):
            evs.append(done(n, f"2025-03-{10 - back:02d}T12:00:00"))
            n += 1
    evs += [done(f"today{i}", f"{D}T08:00:00") for i in range(5)]
    u = user(evs)
    stdev = math.sqrt(4 / 6)  # squared deviations 1,0,1,1,0,1,0 over n-1 = 6
    v = values(u, "momentum")
    assert v["baseline_completions_per_day"] == pytest.approx(2.0, abs=1e-12)
    assert v["stdev"] == pytest.approx(stdev, abs=1e-12)
    assert v["z"] == pytest.approx(3 / stdev, abs=1e-12)
    assert v["engagement_trend"] == "rising"
    assert u.extras["momentum"] == {"today": 5}


def test_momentum_guard_six_baseline_days_is_cold_start() -> None:
    evs = [done(i, f"2025-03-{4 + i:02d}T12:00:00") for i in range(7)]  # 03-04 .. 03-10
    u = user(evs)
    assert sources(u, "momentum") == dict.fromkeys(COLD_START["momentum"], "cold_start")
    assert u.extras["momentum"] == {"today": 1}


def test_momentum_baseline_capped_at_d_minus_28_and_zero_days_count() -> None:
    # First done 40 days back; baseline days D-28..D-1 (28 days): 14 done on 7 days, 0 elsewhere.
    evs = [done("old", "2025-01-29T12:00:00")]
    evs += [done(f"b{i}", f"2025-02-{10 + 2 * (i // 2):02d}T12:00:00") for i in range(14)]
    evs += [done("t", f"{D}T01:00:00")]
    u = user(evs)
    v = values(u, "momentum")
    mean = 14 / 28
    var = (7 * (2 - mean) ** 2 + 21 * mean**2) / 27
    assert v["baseline_completions_per_day"] == pytest.approx(mean, abs=1e-12)
    assert v["stdev"] == pytest.approx(math.sqrt(var), abs=1e-12)
    assert v["z"] == pytest.approx((1 - mean) / math.sqrt(var), abs=1e-12)
    assert v["engagement_trend"] == "steady"  # var 21/27, z = 0.5 / 0.8819 = 0.57


def test_momentum_zero_stdev_means_zero_z_and_falling() -> None:
    evs = [done(i, f"2025-03-0{1 + i}T12:00:00") for i in range(9)]  # 1 a day, D = 03-09
    u = user(evs)
    v = values(u, "momentum")
    # D = 03-09, first done 03-01: baseline 03-01..03-08 = 8 days of 1; stdev 0 -> z 0.
    assert v == {
        "baseline_completions_per_day": 1.0,
        "stdev": 0.0,
        "z": 0.0,
        "engagement_trend": "steady",
    }
    # A day with no completion after that: today 0 (D = 03-10 via a mood event).
    evs2 = [*evs, done(99, "2025-03-02T13:00:00"), ev("m", f"{D}T12:00:00", "mood_logged", score=3)]
    v2 = values(user(evs2), "momentum")
    # Baseline 03-01..03-09: counts 1,2,1,1,1,1,1,1,1 -> mean 10/9, stdev sqrt((8/81*... )).
    mean = 10 / 9
    sd = math.sqrt((8 * (1 - mean) ** 2 + (2 - mean) ** 2) / 8)
    assert v2["z"] == pytest.approx(-mean / sd, abs=1e-12)  # -1.1/0.333 = -3.33
    assert v2["engagement_trend"] == "falling"


# ----------------------------------------------------------------- overdue-task


def test_overdue_tolerance_and_project_realness() -> None:
    # Lateness (days): p1 2, 3, 4; p2 -1, 0.5. Global median of [2,3,4,-1,0.5] = 2.
    # p1 median 3 -> 1/(1+1) = 0.5; p2 has only 2 values (excluded).
    spec = [("p1", 2.0), ("p1", 3.0), ("p2", -1.0), ("p1", 4.0), ("p2", 0.5)]
    evs = []
    for i, (project, late) in enumerate(spec):
        at = ts_s(f"2025-03-0{1 + i}T12:00:00")
        evs.append(
            done(i, f"2025-03-0{1 + i}T12:00:00", project_id=project, due_at=int(at - late * 86400))
        )
    u = user(evs)
    assert values(u, "overdue-task") == {
        "lateness_tolerance_days": 2.0,
        "project_realness": {"p1": 0.5},
    }
    assert sources(u, "overdue-task") == dict.fromkeys(COLD_START["overdue-task"], "inferred")


def test_overdue_guard_four_values_and_undated_done_events() -> None:
    evs = [done(i, f"2025-03-0{1 + i}T12:00:00", due_at=0) for i in range(4)]
    evs += [done(f"n{i}", f"2025-03-0{1 + i}T13:00:00") for i in range(5)]  # no due_at
    u = user(evs)
    assert u.params["overdue-task"] == {
        "lateness_tolerance_days": {"value": 1.0, "source": "cold_start"},
        "project_realness": {"value": {}, "source": "cold_start"},
    }


def test_overdue_tolerance_uses_the_100_most_recent_by_event_time() -> None:
    # X: 50 on time at 03-01; Y: 50 ten days late at 03-02; Z: 5 ten days late at 02-28,
    # arriving last. By event time the 100 most recent are X + Y: median (0 + 10) / 2 = 5.
    # (The last 100 by arrival, or all 105, would give 10.)
    def late(i: str, at: str, days: float) -> Any:
        return done(i, at, due_at=int(ts_s(at) - days * 86400))

    evs = [late(f"x{i}", "2025-03-01T00:00:00", 0) for i in range(50)]
    evs += [late(f"y{i}", "2025-03-02T00:00:00", 10) for i in range(50)]
    evs += [late(f"z{i}", "2025-02-28T00:00:00", 10) for i in range(5)]
    u = user(evs)
    assert values(u, "overdue-task")["lateness_tolerance_days"] == 5.0


def test_overdue_tasks_strict_boundary_order_and_closing() -> None:
    w = "2025-03-10T12:00:00"
    wm = ts_s(w)
    evs = [
        ev("c1", "2025-03-01T00:00:00", "task_created", task_id="a", due_at=wm - 86400),
        ev("c2", "2025-03-01T00:00:00", "task_created", task_id="b", due_at=wm - 86401),
        ev("c3", "2025-03-01T00:00:00", "task_created", task_id="c", due_at=wm - 5 * 86400),
        ev("c4", "2025-03-01T00:00:00", "task_created", task_id="d", due_at=wm - 5 * 86400),
        ev("c5", "2025-03-01T00:00:00", "task_created", task_id="e", due_at=wm - 9 * 86400),
        ev("c6", "2025-03-01T00:00:00", "task_created", task_id="f", due_at=wm - 2 * 86400),
        ev("c7", "2025-03-01T00:00:00", "task_created", task_id="g", due_at=wm - 2 * 86400),
        ev("c8", "2025-03-01T00:00:00", "task_created", task_id="h", due_at=wm - 2 * 86400),
        ev("m", w, "mood_logged", score=4),  # sets the watermark
        # e is completed; f deleted; g updated without a due date (no longer tracked).
        ev("x1", "2025-03-05T00:00:00", "task_completed", task_id="e"),
        ev("x2", "2025-03-05T00:00:00", "task_deleted", task_id="f"),
        ev("x3", "2025-03-05T00:00:00", "task_updated", task_id="g"),
        # h: a late created with an older occurred_at does not reopen nor move it.
        ev("x4", "2025-03-06T00:00:00", "task_updated", task_id="h", due_at=wm - 3 * 86400),
        ev("x5", "2025-03-04T00:00:00", "task_created", task_id="h", due_at=wm),
    ]
    u = user(evs)
    # Cold tolerance 1.0: a is due exactly 1 day before W -> not overdue (strict).
    # Overdue: b (1d+1s), c, d (5d), h (3d). Most overdue first, ties by id.
    assert u.extras["overdue-task"] == {"overdue_count": 4, "overdue_task_ids": ["c", "d", "h"]}


def test_overdue_tasks_use_the_user_tolerance() -> None:
    wm = ts_s(f"{D}T12:00:00")
    evs = [
        ev("c1", "2025-03-01T00:00:00", "task_created", task_id="a", due_at=wm - 3600),
        ev("m", f"{D}T12:00:00", "mood_logged", score=4),
        ev(
            "pref",
            "2025-03-09T00:00:00",  # arrives after W: must be within the lateness
            "preference_set",
            agent_id="overdue-task",
            param="lateness_tolerance_days",
            value_json="0",
        ),
    ]
    u = user(evs)
    assert u.extras["overdue-task"] == {"overdue_count": 1, "overdue_task_ids": ["a"]}
    assert u.params["overdue-task"]["lateness_tolerance_days"] == {
        "value": 0,
        "source": "user",
        "inferred_value": 1.0,
    }


# -------------------------------------------------------------- recent-patterns


def test_recent_patterns_short_lookback_and_cycles() -> None:
    # 30 done events on Mondays at 10h within the last 7 days: all on D (a Monday).
    u = user([done(i, f"{D}T10:{i:02d}:00") for i in range(30)])
    assert values(u, "recent-patterns") == {
        "lookback_days": 7,
        "weekly_cycle": pytest.approx(1 - (30 / 7) / 30),  # 6/7
        "daily_cycle": pytest.approx(1 - (30 / 24) / 30),  # 23/24
    }


def test_recent_patterns_lookback_112_and_guard() -> None:
    # 12 done events in the last 112 days, never 30: lookback 112.
    # Days back 0..11 -> weekdays Mon, Sun, Sat, ..., i.e. 6,5,...: bins Mon 2, Sun 2, others 1..
    evs = [done("a", "2024-11-19T00:00:00"), done("old", "2024-11-18T23:00:00")]
    evs += [done(i, f"2025-03-{1 + i:02d}T{(i % 2) * 12:02d}:00:00") for i in range(10)]
    u = user(evs)
    # 11 in window (2024-11-19 = D-111 in, 11-18 = D-112 out). Weekdays: 03-10..03-01 is
    # Mon, Sun, Sat, Fri, Thu, Wed, Tue, Mon, Sun, Sat; 2024-11-19 is a Tuesday.
    # Bins Mon 2, Tue 2, Wed 1, Thu 1, Fri 1, Sat 2, Sun 2 -> max 2, mean 11/7.
    v = values(u, "recent-patterns")
    assert v["lookback_days"] == 112
    assert v["weekly_cycle"] == pytest.approx(1 - (11 / 7) / 2)
    # Hours: 00h x6 (5 + 11-19), 12h x5 -> max 6, mean 11/24.
    assert v["daily_cycle"] == pytest.approx(1 - (11 / 24) / 6)
    u9 = user(evs[:9])
    assert sources(u9, "recent-patterns") == dict.fromkeys(
        COLD_START["recent-patterns"], "cold_start"
    )


def test_recent_patterns_lookback_takes_smallest_that_holds_30() -> None:
    # 20 on D, 10 on D-10 (in 14 not 7): 7 has 20, 14 has 30 -> 14.
    evs = [done(f"b{i}", "2025-02-28T09:00:00") for i in range(10)]
    evs += [done(i, f"{D}T09:00:00") for i in range(20)]
    assert values(user(evs), "recent-patterns")["lookback_days"] == 14


# ------------------------------------------------------------------- focus-area


def test_focus_area_counts_then_latest_then_id() -> None:
    evs = [
        done(1, "2025-03-01T10:00:00", project_id="p1"),
        done(2, "2025-03-02T10:00:00", project_id="p1"),
        done(3, "2025-03-03T10:00:00", project_id="p1"),
        done(4, "2025-03-04T10:00:00", project_id="p2"),
        done(5, "2025-03-05T10:00:00", project_id="p2"),
        done(6, "2025-03-04T09:00:00", project_id="p3"),
        done(7, "2025-03-06T10:00:00", project_id="p3"),  # p3 latest after p2's
        done(8, "2025-03-09T10:00:00", project_id=""),  # no project: not counted
    ]
    assert values(user(evs), "focus-area") == {"preferred_areas": ["p1", "p3"]}
    # p2 and p3 tied on count and latest completion: id ascending.
    evs[6] = done(7, "2025-03-05T10:00:00", project_id="p3")
    assert values(user(evs), "focus-area") == {"preferred_areas": ["p1", "p2"]}


def test_focus_area_guard_counts_only_events_with_a_project() -> None:
    evs = [done(i, f"2025-03-0{1 + i}T10:00:00", project_id="p1") for i in range(4)]
    evs += [done(f"n{i}", "2025-03-06T10:00:00") for i in range(5)]
    u = user(evs)
    assert u.params["focus-area"] == {"preferred_areas": {"value": [], "source": "cold_start"}}
    u = user([*evs, done("x", "2025-03-07T10:00:00", project_id="p4")])
    assert values(u, "focus-area") == {"preferred_areas": ["p1", "p4"]}


# --------------------------------------------------------------------- feedback


def test_feedback_rate_and_per_agent() -> None:
    evs = [
        ev("s", "2025-03-01T00:00:00", "mood_logged", score=3),
        ev("r0", "2025-03-01T08:00:00", "tip_reaction", tip_id="T1", reaction=1),  # before tip
        ev(
            "t1",
            "2025-03-01T07:00:00",
            "tip_shown",
            tip_id="T1",
            agent_ids=["momentum", "momentum", "focus-area"],
        ),
        ev("r1", "2025-03-01T09:00:00", "tip_reaction", tip_id="T1", reaction=2),  # like
        ev("r2", "2025-03-01T09:00:01", "tip_reaction", tip_id="T1", reaction=3),  # dismiss
        ev("r3", "2025-03-01T09:00:02", "tip_reaction", tip_id="T1", reaction=0),  # unspecified
        ev("r4", "2025-03-01T09:00:03", "tip_reaction", tip_id="T1", reaction=4),  # snooze
    ]
    u = user(evs)
    # Rated 1 (r0), 1, 0, 0 -> 1, 1, 0.9, 0.81.
    assert u.feedback["feedback_events"] == 6
    assert u.feedback["acceptance_rate"] == pytest.approx(0.81, abs=1e-12)
    assert u.feedback["per_agent"] == {
        "focus-area": {"shown": 1, "positive": 1},
        "momentum": {"shown": 1, "positive": 1},
    }


def test_feedback_no_rated_reaction_and_forgotten_tips() -> None:
    evs = [
        ev("t1", "2025-03-01T00:00:00", "tip_shown", tip_id="T1", agent_ids=["momentum"]),
        ev("s", "2025-03-08T00:00:01", "mood_logged", score=3),  # W - 7d = 03-01T00:00:01
        ev("r1", "2025-03-01T01:00:00", "tip_reaction", tip_id="T1", reaction=1),
    ]
    u = user(evs)
    assert u.feedback == {
        "feedback_events": 2,
        "acceptance_rate": 1.0,
        "per_agent": {"momentum": {"shown": 1, "positive": 0}},
    }
    only_shown = user(evs[:1])
    assert only_shown.feedback["acceptance_rate"] is None
    # No signal event at all: no as-of time, so no agent outputs.
    assert only_shown.params == {} and only_shown.extras == {}


# ------------------------------------------------------------------- admission


def test_duplicates_and_late_events() -> None:
    evs = [
        done(1, "2025-03-10T12:00:00"),
        done(1, "2025-03-10T12:00:00"),  # same id: duplicate
        done(2, "2025-03-03T12:00:00"),  # exactly W - 7d: admitted
        done(3, "2025-03-03T11:59:59"),  # older: late
        ev("fb", "2025-03-01T00:00:00", "tip_shown", tip_id="x", agent_ids=[]),  # late too
    ]
    u = user(evs)
    assert u.counters == {"late_dropped": 2, "duplicates": 1, "deleted_dropped": 0}
    assert sum(u.extras["time-of-day"]["hist"]) == 2
    assert u.feedback["feedback_events"] == 0


def test_resent_event_behind_the_lateness_is_late_not_duplicate() -> None:
    evs = [done(1, "2025-03-01T12:00:00"), done(2, D + "T12:00:00"), done(1, "2025-03-01T12:00:00")]
    assert user(evs).counters == {"late_dropped": 1, "duplicates": 0, "deleted_dropped": 0}


def test_deletion_tombstone_and_fresh_life() -> None:
    evs = [
        done(1, "2025-03-01T12:00:00"),
        ev("pr", "2025-03-01T00:00:00", "profile_updated", tz="Asia/Kolkata"),
        ev("c", "2025-03-01T00:00:00", "consent_changed", consent="tasks", granted=False),
        ev("tip", "2025-03-01T00:00:00", "tip_shown", tip_id="T", agent_ids=["momentum"]),
        ev("del", "2025-03-05T00:00:00", "user_deleted"),
    ]
    u = user(evs)
    assert u.deleted and u.params == {}
    more = [
        done(1, "2025-03-01T12:00:00"),  # replay: at or before the tombstone
        ev("del0", "2025-03-04T00:00:00", "user_deleted"),  # older deletion: dropped
        ev("at", "2025-03-05T00:00:00", "mood_logged", score=2),  # at the tombstone: dropped
        done(9, "2025-03-06T20:00:00"),  # after: a fresh user, UTC, consents granted
    ]
    u = user(evs + more)
    assert not u.deleted
    assert u.counters == {"late_dropped": 0, "duplicates": 0, "deleted_dropped": 3}
    assert set(u.params) == set(COLD_START)
    assert u.extras["time-of-day"]["hist"][20] == 1 and sum(u.extras["time-of-day"]["hist"]) == 1
    assert values(u, "time-of-day")["tz"] == "UTC"
    assert u.feedback == {"feedback_events": 0, "acceptance_rate": None, "per_agent": {}}


def test_late_deletion_wipes_later_events_and_the_watermark() -> None:
    evs = [
        done(1, "2025-03-20T12:00:00"),
        done(2, "2025-03-05T12:00:00"),  # 15 d behind the watermark: late
        ev("del", "2025-03-01T00:00:00", "user_deleted"),  # 19 d behind: still honoured
        done(3, "2025-03-02T12:00:00"),  # fresh life, no watermark: admitted
        done(1, "2025-03-20T12:00:00"),  # wiped, so not a duplicate: admitted again
    ]
    u = user(evs)
    assert u.counters == {"late_dropped": 1, "duplicates": 0, "deleted_dropped": 0}
    assert sum(u.extras["time-of-day"]["hist"]) == 2  # 03-02 and 03-20, D = 03-20
    assert u.as_of_date.isoformat() == "2025-03-20"


# ---------------------------------------------------------------- consents, prefs


def test_consent_revoke_and_regrant_start_empty() -> None:
    evs = [done(i, f"2025-03-0{1 + i}T10:00:00") for i in range(6)]
    revoke = ev("rv", "2025-03-07T00:00:00", "consent_changed", consent="tasks", granted=False)
    u = user([*evs, revoke])
    assert u.params == {} and u.extras == {}
    older_grant = ev("g0", "2025-03-06T00:00:00", "consent_changed", consent="tasks", granted=True)
    other = ev("o", "2025-03-07T01:00:00", "consent_changed", consent="calendar", granted=False)
    u = user([*evs, revoke, older_grant, other, done("x", "2025-03-07T02:00:00")])
    assert u.params == {}  # the older grant does not stand; calendar is not required
    grant = ev("g1", "2025-03-08T00:00:00", "consent_changed", consent="tasks", granted=True)
    u = user(
        [*evs, revoke, done("x", "2025-03-07T02:00:00"), grant, done("y", "2025-03-04T10:00:00")]
    )
    # Only y (admitted after the re-grant, though older) is folded.
    assert u.extras["time-of-day"]["hist"][10] == 1 and sum(u.extras["time-of-day"]["hist"]) == 1


def test_preferences_latest_by_event_time_clear_and_unknown() -> None:
    def pref(i: str, at: str, agent: str, param: str, value: str) -> Any:
        return ev(i, at, "preference_set", agent_id=agent, param=param, value_json=value)

    evs = [
        pref("a", "2025-03-02T00:00:00", "time-of-day", "preferred_hour", "7"),
        pref("b", "2025-03-01T00:00:00", "time-of-day", "preferred_hour", "5"),  # older: no
        pref("c", "2025-03-02T00:00:00", "focus-area", "preferred_areas", '["p2"]'),
        pref("d", "2025-03-03T00:00:00", "focus-area", "preferred_areas", ""),  # cleared
        pref("e", "2025-03-02T00:00:00", "momentum", "nope", "1"),
        pref("f", "2025-03-02T00:00:00", "nobody", "preferred_hour", "1"),
        pref("g", "2025-03-02T00:00:00", "time-of-day", "tz", '"Europe/Berlin"'),
    ]
    u = user(evs)
    assert u.params["time-of-day"]["preferred_hour"] == {
        "value": 7,
        "source": "user",
        "inferred_value": 9,
    }
    assert u.params["time-of-day"]["tz"] == {
        "value": "Europe/Berlin",
        "source": "user",
        "inferred_value": "UTC",
    }
    assert u.params["focus-area"]["preferred_areas"] == {"value": [], "source": "cold_start"}
    assert set(u.params["momentum"]) == set(COLD_START["momentum"])


def test_task_updated_without_due_date_stays_untracked_against_older_events() -> None:
    # The newest event of o1 (by occurred_at) is an update without a due date; a TaskCreated
    # with a due date that arrives later but happened earlier must not reopen it.
    evs = [
        ev("u", "2025-05-10T08:00:00", "task_updated", task_id="o1"),
        ev("c", "2025-05-09T01:00:00", "task_created", task_id="o1", due_at="2025-05-01T00:00:00"),
        ev("m", "2025-05-12T00:00:00", "mood_logged", score=3),
    ]
    assert user(evs).extras["overdue-task"] == {"overdue_count": 0, "overdue_task_ids": []}


def test_profile_zone_offset_is_taken_at_the_event_instant_across_dst() -> None:
    # Auckland moved to NZDT (+13) at 2025-09-27T14:00Z. 2025-09-28T01:48Z is 14:48 local
    # (evaluating the offset at 01:48 as if it were local wall time would give +12 -> 13h).
    evs = [
        ev("p", "2025-09-22T17:00:00", "profile_updated", tz="Pacific/Auckland"),
        done(1, "2025-09-28T01:48:19"),
        # Berlin left CEST at 2025-10-26T01:00Z: 00:30Z is 02:30 CEST, 01:30Z is 02:30 CET.
    ]
    hist = user(evs).extras["time-of-day"]["hist"]
    assert hist[14] == 1 and sum(hist) == 1
    berlin = [
        ev("p", "2025-10-20T00:00:00", "profile_updated", tz="Europe/Berlin"),
        done(1, "2025-10-26T00:30:00"),
        done(2, "2025-10-26T01:30:00"),
        done(3, "2025-10-26T02:30:00"),
    ]
    hist = user(berlin).extras["time-of-day"]["hist"]
    assert (hist[2], hist[3]) == (2, 1)


def test_tip_is_forgotten_once_the_watermark_passes_it_by_seven_days() -> None:
    # Tip at 08-08 14:48. The watermark moves to 08-15 04:54 (tip still within 7 days), then
    # to 08-15 19:01 (horizon 08-08 19:01: tip forgotten) before the reaction is admitted.
    evs = [
        ev("t", "2025-08-08T14:48:02", "tip_shown", tip_id="T", agent_ids=["recent-patterns"]),
        done(1, "2025-08-15T04:54:15"),
        done(2, "2025-08-15T19:01:03"),
        ev("r", "2025-08-10T09:56:41", "tip_reaction", tip_id="T", reaction=1),
    ]
    fb = user(evs).feedback
    assert fb["per_agent"] == {"recent-patterns": {"shown": 1, "positive": 0}}
    assert fb["acceptance_rate"] == 1.0
    without_second = user([evs[0], evs[1], evs[3]]).feedback
    assert without_second["per_agent"] == {"recent-patterns": {"shown": 1, "positive": 1}}


# ------------------------------------------------------------------ context


def ctx(i: int, at: str, name: str, active: bool = True, **kw: Any) -> Any:
    return ev(f"x{i}", at, "context_changed", context=name, active=active, **kw)


def test_context_by_hand() -> None:
    # travel on 03-01 08:00, off 03-03 08:00; "deep work" on 03-10 09:00 (still on);
    # commuting on 03-09 07:00 and off 07:45, on again 03-10 07:00 and on once more 07:30.
    events = [
        ctx(1, "2025-03-01T08:00:00", "travel"),
        ctx(2, "2025-03-03T08:00:00", "travel", False),
        ctx(3, "2025-03-09T07:00:00", "commuting"),
        ctx(4, "2025-03-09T07:45:00", "commuting", False),
        ctx(5, "2025-03-10T07:00:00", "commuting"),
        ctx(6, "2025-03-10T07:30:00", "commuting"),
        ctx(7, f"{D}T09:00:00", "deep work"),
        ctx(8, f"{D}T09:00:00", ""),  # ignored
        done(1, "2025-03-02T10:00:00"),  # travel
        done(2, "2025-03-03T08:00:00"),  # at travel's "off": off stands at 08:00
        done(3, "2025-03-09T07:10:00"),  # commuting
        done(4, "2025-03-09T08:00:00"),  # nothing active
        done(5, f"{D}T09:00:00"),  # commuting (since 07:00) and deep work (on at 09:00 sharp)
        done(6, f"{D}T10:00:00"),  # commuting and deep work
        done(7, "2025-02-01T10:00:00"),  # before any context
    ]
    # Delivered in event-time order (stable: the empty context still arrives after deep work).
    u = user(sorted(events, key=lambda e: e.occurred_at.seconds))
    assert values(u, "context") == {
        "active_contexts": ["commuting", "deep work"],
        "active_since": {
            "commuting": ts_s("2025-03-10T07:30:00") * 1000,
            "deep work": ts_s(f"{D}T09:00:00") * 1000,
        },
        "done_in_context": {"travel": 1, "commuting": 3, "deep work": 2},
    }
    assert set(sources(u, "context").values()) == {"inferred"}


def test_context_window_is_28_days_and_guard_needs_a_context() -> None:
    # Done events while travelling on 02-01 (37 days before D) are out of the window.
    events = [
        ctx(1, "2025-01-31T08:00:00", "travel"),
        done(1, "2025-02-01T10:00:00"),
        done(2, "2025-02-11T10:00:00"),  # D-27: in
        ev("h", f"{D}T12:00:00", "habit_checked", habit_id="h"),
    ]
    assert values(user(events), "context")["done_in_context"] == {"travel": 1}
    no_context = [done(1, f"{D}T10:00:00")]
    assert sources(user(no_context), "context") == dict.fromkeys(
        COLD_START["context"], "cold_start"
    )


def test_context_tie_on_occurred_at_the_later_admission_stands() -> None:
    events = [ctx(1, f"{D}T09:00:00", "focus", False), ctx(2, f"{D}T09:00:00", "focus", True)]
    assert values(user(events), "context")["active_contexts"] == ["focus"]
    events = [ctx(2, f"{D}T09:00:00", "focus", True), ctx(1, f"{D}T09:00:00", "focus", False)]
    assert values(user(events), "context")["active_contexts"] == []
