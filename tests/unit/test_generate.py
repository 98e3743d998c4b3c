"""`oo_features.generate` and `oo-features generate`: deterministic, valid, realistic, chaotic."""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import zoneinfo
from collections import Counter, defaultdict

import pytest

from connectors.codec import from_json, to_json, validate
from connectors.exceptions import DecodeError, ValidationError
from oo_features.commands import generate as command
from oo_features.generate import (
    AGENT_IDS,
    ChaosOptions,
    GenerateStats,
    default_start,
    format_event,
    generate_events,
    generate_lines,
    generate_records,
    record_to_event,
    write_jsonl,
)

USERS, DAYS, SEED = 300, 14, 11
WEEK = 7 * 86_400
CHAOS = ChaosOptions(out_of_order=0.05, duplicates=0.03, too_late=0.02, invalid=0.01)
KNOWN_PARAMS = {
    ("time-of-day", "preferred_hour"),
    ("time-of-day", "quiet_start"),
    ("time-of-day", "quiet_end"),
    ("time-of-day", "peak_hours"),
    ("overdue-task", "lateness_tolerance_days"),
    ("recent-patterns", "lookback_days"),
    ("focus-area", "preferred_areas"),
}


@pytest.fixture(scope="module")
def records() -> list[tuple]:
    return list(generate_records(USERS, DAYS, SEED))


@pytest.fixture(scope="module")
def chaotic() -> tuple[list[str], GenerateStats]:
    stats = GenerateStats()
    lines = list(generate_lines(USERS, DAYS, SEED, chaos=CHAOS, stats=stats))
    return lines, stats


@pytest.fixture(scope="module")
def parsed(chaotic) -> list[tuple[str, object]]:
    """Each chaotic line with its validated Event, or the DecodeError/ValidationError it raised."""
    out: list[tuple[str, object]] = []
    for line in chaotic[0]:
        try:
            out.append((line, _parse(line)))
        except (DecodeError, ValidationError) as exc:
            out.append((line, exc))
    return out


def _text(users: int, days: int, seed: int, chaos: ChaosOptions | None = None) -> str:
    out = io.StringIO()
    write_jsonl(out, users, days, seed, chaos=chaos)
    return out.getvalue()


def _local(event_ts: int, offset: int | None, tz: str) -> dt.datetime:
    if offset is not None:
        return dt.datetime.fromtimestamp(event_ts + offset * 60, dt.UTC)
    return dt.datetime.fromtimestamp(event_ts, zoneinfo.ZoneInfo(tz))


def _parse(line: str):
    return validate(from_json(line))


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_bytes_and_another_seed_differs() -> None:
    first = _text(40, 5, 3, CHAOS)
    assert first == _text(40, 5, 3, CHAOS)
    assert first != _text(40, 5, 4, CHAOS)
    assert first.endswith("\n") and "\n\n" not in first


def test_a_users_events_do_not_depend_on_how_many_users_are_generated() -> None:
    few = [r for r in generate_records(3, 6, 5) if r[2] == "u00001"]
    many = [r for r in generate_records(30, 6, 5) if r[2] == "u00001"]
    assert few and few == many


def test_chaos_leaves_the_base_events_alone(records, parsed) -> None:
    base = {format_event(r) for r in records}
    seen = {
        line
        for line, event in parsed
        if not isinstance(event, Exception) and "-late-" not in event.event_id
    }
    assert seen == base


def test_default_start_is_fixed_and_keeps_long_runs_in_the_past() -> None:
    assert default_start(7) == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert default_start(300) == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert default_start(400) + dt.timedelta(days=400) < dt.datetime(2026, 10, 29, tzinfo=dt.UTC)
    first = next(iter(generate_records(1, 2, 0)))
    assert first[0] == int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()) - 60 - first[3] * 60


def test_start_sets_the_first_local_date() -> None:
    start = dt.datetime(2026, 3, 2, 15, 0, tzinfo=dt.UTC)
    recs = list(generate_records(20, 3, 1, start))
    tz = {}
    dates = set()
    for r in recs:
        if r[5] == "profile_updated":
            tz.setdefault(r[2], r[6][0])
        if r[5] in ("mood_logged", "habit_checked"):
            dates.add(_local(r[0], r[3], tz[r[2]]).date())
    assert min(dates) >= dt.date(2026, 3, 2)
    assert max(dates) <= dt.date(2026, 3, 4)


# --------------------------------------------------------------------------- validity


def test_every_line_parses_and_validates_without_chaos(records) -> None:
    lines = list(generate_lines(USERS, DAYS, SEED))
    assert len(lines) == len(records)
    rejects = 0
    for line in lines:
        try:
            _parse(line)
        except (DecodeError, ValidationError):
            rejects += 1
    assert rejects == 0


def test_hand_formatter_matches_protobuf_json_for_every_event(records, chaotic) -> None:
    lines, _ = chaotic
    sample = records[::7] + [r for r in records if r[5] not in ("task_created", "tip_shown")][:3000]
    for rec in sample:
        assert format_event(rec) == to_json(record_to_event(rec))
    for line in lines[:5000]:
        try:
            event = _parse(line)
        except (DecodeError, ValidationError):
            continue
        assert to_json(event) == line
    kinds = {r[5] for r in records}
    assert kinds == set(pb_kinds()), "the sample covers every payload"


def pb_kinds() -> list[str]:
    from proto import events_pb2 as pb

    return [f.name for f in pb.Event.DESCRIPTOR.oneofs_by_name["payload"].fields]


def test_generate_events_yields_the_same_events_as_the_lines() -> None:
    events = list(generate_events(20, 4, 2, chaos=CHAOS))
    lines = [
        line for line in generate_lines(20, 4, 2, chaos=CHAOS) if line.startswith('{"eventId": "u')
    ]
    assert [to_json(e) for e in events] == lines


def test_sorted_unique_and_plausible_rates(records) -> None:
    times = [r[0] for r in records]
    assert times == sorted(times)
    ids = [r[1] for r in records]
    assert len(set(ids)) == len(ids)
    per_user_day = len(records) / USERS / DAYS
    assert 5 <= per_user_day <= 15
    assert all(r[2].startswith("u") and len(r[2]) == 6 for r in records)


def test_each_user_starts_with_a_profile_and_task_lifecycles_are_ordered(records) -> None:
    first_kind = {}
    created = {}
    closed = Counter()
    for r in records:
        uid, kind, data = r[2], r[5], r[6]
        first_kind.setdefault(uid, kind)
        key = (uid, data[0]) if kind.startswith("task_") else None
        if kind == "task_created":
            created[key] = r[0]
        elif kind in ("task_completed", "task_deleted", "task_updated"):
            if key in created:  # tasks of users deleted and back are new tasks
                assert r[0] > created[key], r
            if kind != "task_updated":
                closed[key] += 1
    assert set(first_kind.values()) == {"profile_updated"}
    assert len(first_kind) == USERS
    assert max(closed.values()) == 1
    open_tasks = set(created) - set(closed)
    assert len(open_tasks) > USERS, "some tasks stay open (and overdue)"


# --------------------------------------------------------------------------- shape


def _done_local(records) -> list[tuple[str, dt.datetime, tuple]]:
    tz: dict[str, str] = {}
    out = []
    for r in records:
        if r[5] == "profile_updated":
            tz[r[2]] = r[6][0]
        elif r[5] == "task_completed":
            out.append((r[2], _local(r[0], r[3], tz[r[2]]), r))
    return out


def test_done_events_peak_by_day_and_are_quiet_at_night(records) -> None:
    hours = Counter(local.hour for _, local, _ in _done_local(records))
    night = sum(hours[h] for h in (1, 2, 3, 4))
    peak = max(hours.values())
    assert peak > 20 * (night / 4)
    assert max(hours, key=hours.get) in range(8, 16)
    # and per user: a clear preferred hour and a quiet night
    per_user: dict[str, Counter] = defaultdict(Counter)
    for uid, local, _ in _done_local(records):
        per_user[uid][local.hour] += 1
    busy = [c for c in per_user.values() if sum(c.values()) >= 20]
    assert len(busy) > USERS // 4
    quiet = sum(1 for c in busy if sum(c[h] for h in range(1, 5)) <= 0.05 * sum(c.values()))
    assert quiet >= 0.9 * len(busy)


def test_weekdays_are_busier_than_weekends(records) -> None:
    per_weekday = Counter(local.weekday() for _, local, _ in _done_local(records))
    # 14 days from a Thursday: each weekday twice
    weekday = sum(per_weekday[d] for d in range(5)) / 5
    weekend = (per_weekday[5] + per_weekday[6]) / 2
    assert weekend < 0.75 * weekday


def test_offsets_zones_and_travel(records) -> None:
    tz: dict[str, str] = {}
    home: dict[str, str] = {}
    with_offset: Counter = Counter()
    total: Counter = Counter()
    matching = mismatched = 0
    mismatched_users = set()
    for r in records:
        uid = r[2]
        if r[5] == "profile_updated":
            tz[uid] = r[6][0]
            home.setdefault(uid, r[6][0])
        total[uid] += 1
        if r[3] is None:
            continue
        with_offset[uid] += 1
        zone = zoneinfo.ZoneInfo(home[uid])
        actual = dt.datetime.fromtimestamp(r[0], zone).utcoffset()
        assert actual is not None
        if int(actual.total_seconds()) // 60 == r[3]:
            matching += 1
        else:
            mismatched += 1
            mismatched_users.add(uid)
    assert matching > 0.85 * (matching + mismatched)
    assert 0.03 * USERS < len(mismatched_users) < 0.3 * USERS, "some users travel"
    never = [u for u in total if with_offset[u] == 0]
    always = [u for u in total if with_offset[u] == total[u]]
    assert 0.1 * USERS < len(never) < 0.35 * USERS
    assert len(always) > 0.5 * USERS
    assert len(set(home.values())) >= 10
    assert any(tz[u] != home[u] for u in tz), "some travellers update their profile"


@pytest.mark.parametrize("start", [dt.date(2026, 3, 7), dt.date(2026, 3, 28)])
def test_offsets_follow_dst_exactly(start: dt.date) -> None:
    """Over a DST switch (US on 8 March, EU on 29 March), and too short for trips."""
    home: dict[str, str] = {}
    checked = 0
    for r in generate_records(150, 4, 3, start):
        if r[5] == "profile_updated":
            home.setdefault(r[2], r[6][0])
        if r[3] is None:
            continue
        actual = dt.datetime.fromtimestamp(r[0], zoneinfo.ZoneInfo(home[r[2]])).utcoffset()
        assert actual is not None and int(actual.total_seconds()) // 60 == r[3], r
        checked += 1
    assert checked > 1000


def test_projects_deadlines_and_task_events(records) -> None:
    projects: dict[str, set] = defaultdict(set)
    lateness: dict[tuple[str, str], list[float]] = defaultdict(list)
    kinds = Counter(r[5] for r in records)
    for r in records:
        if r[5] == "task_completed":
            _, project, due = r[6]
            assert project
            projects[r[2]].add(project)
            if due is not None:
                lateness[r[2], project].append((r[0] - due) / 86_400)
    assert all(1 <= len(p) <= 10 for p in projects.values())
    assert max(len(p) for p in projects.values()) >= 5
    assert kinds["task_updated"] > 0 and kinds["task_deleted"] > 0
    assert kinds["task_completed"] > 0.5 * kinds["task_created"]
    with_due = sum(1 for r in records if r[5] == "task_completed" and r[6][2] is not None)
    assert with_due > 0.8 * kinds["task_completed"]
    # different deadline discipline: per user, project median lateness varies
    spreads = []
    for uid in projects:
        medians = sorted(
            sorted(v)[len(v) // 2] for (u, _), v in lateness.items() if u == uid and len(v) >= 5
        )
        if len(medians) >= 2:
            spreads.append(medians[-1] - medians[0])
    assert spreads and sorted(spreads)[len(spreads) // 2] > 1.0


def test_feedback_preferences_consents_and_deletions(records) -> None:
    kinds = Counter(r[5] for r in records)
    for name in ("habit_checked", "calendar_event_observed", "mood_logged", "context_changed"):
        assert kinds[name] > USERS
    shown = {r[6][0]: r for r in records if r[5] == "tip_shown"}
    assert all(1 <= len(r[6][1]) <= 3 and set(r[6][1]) <= set(AGENT_IDS) for r in shown.values())
    reactions = [r for r in records if r[5] == "tip_reaction"]
    assert {r[6][1] for r in reactions} == {1, 2, 3, 4}
    assert all(r[6][0] in shown and r[0] > shown[r[6][0]][0] for r in reactions)
    assert all(1 <= r[6][0] <= 5 for r in records if r[5] == "mood_logged")
    prefs = [r[6] for r in records if r[5] == "preference_set"]
    assert prefs and all((a, p) in KNOWN_PARAMS for a, p, _ in prefs)
    assert all(v == "" or json.loads(v) is not None for _, _, v in prefs)
    assert any(v == "" for _, _, v in prefs), "some preferences are cleared"
    consents = [r[6] for r in records if r[5] == "consent_changed"]
    assert ("tasks", False) in consents and ("tasks", True) in consents
    assert 1 <= kinds["user_deleted"] <= 0.05 * USERS


# --------------------------------------------------------------------------- chaos


def test_chaos_counts_are_what_was_asked_for(chaotic, parsed) -> None:
    lines, stats = chaotic
    n = stats.events
    assert abs(stats.invalid - CHAOS.invalid * n) <= 1
    assert abs(stats.duplicates - CHAOS.duplicates * n) <= 1
    assert abs(stats.too_late - CHAOS.too_late * n) <= 3
    assert abs(stats.out_of_order - CHAOS.out_of_order * n) <= 3
    assert len(lines) == stats.lines == n + stats.duplicates + stats.too_late + stats.invalid
    rejects = sum(1 for _, event in parsed if isinstance(event, Exception))
    assert rejects == stats.invalid


def test_invalid_lines_cover_decode_and_validation_errors(parsed) -> None:
    reasons: Counter = Counter()
    for _, event in parsed:
        if isinstance(event, DecodeError):
            reasons["decode"] += 1
        elif isinstance(event, ValidationError):
            reasons[event.field] += 1
    assert reasons["decode"] > 0
    assert {"user_id", "mood_logged.score", "profile_updated.tz"} <= set(reasons)


def test_duplicates_repeat_identical_events_later(chaotic) -> None:
    lines, stats = chaotic
    counts = Counter(lines)
    repeated = {
        line: c for line, c in counts.items() if c > 1 and line.startswith('{"eventId": "u')
    }
    assert sum(c - 1 for c in repeated.values()) == stats.duplicates
    ids = Counter(json.loads(line)["eventId"] for line in repeated)
    assert all(c == 1 for c in ids.values()), "a repeated id is always the identical event"


def _stream_facts(parsed):
    """Per line, the parsed event and the user's latest signal time before it (None if invalid)."""
    latest: dict[str, int] = {}
    out = []
    for _, event in parsed:
        if isinstance(event, Exception):
            out.append((None, None))
            continue
        ts = event.occurred_at.seconds
        out.append((event, latest.get(event.user_id)))
        if event.WhichOneof("payload") not in ("tip_shown", "tip_reaction"):
            latest[event.user_id] = max(ts, latest.get(event.user_id, 0))
    return out


def test_too_late_events_are_more_than_a_week_behind_and_late_ones_are_not(chaotic, parsed) -> None:
    stats = chaotic[1]
    too_late = behind = 0
    max_behind = 0
    for event, latest in _stream_facts(parsed):
        if event is None or latest is None:
            continue
        lag = latest - event.occurred_at.seconds
        if "-late-" in event.event_id:
            too_late += 1
            assert lag > WEEK
        elif lag > 0:
            behind += 1
            max_behind = max(max_behind, lag)
    assert too_late == stats.too_late > 0
    assert behind >= stats.out_of_order > 0
    assert max_behind <= 6 * 86_400 + 3600, "out-of-order events stay within the allowed lateness"


def test_out_of_order_events_arrive_after_later_events(chaotic) -> None:
    lines, stats = chaotic
    high = ""
    inversions = 0
    for line in lines:
        if not line.startswith('{"eventId": "u') or "-late-" in line:
            continue
        ts = json.loads(line)["occurredAt"]
        if ts < high:
            inversions += 1
        high = max(high, ts)
    assert inversions >= 0.9 * stats.out_of_order


def test_chaos_options_reject_bad_fractions() -> None:
    with pytest.raises(ValueError):
        ChaosOptions(invalid=1.5)
    assert not ChaosOptions().active


# --------------------------------------------------------------------------- volume and CLI


def test_volume_is_about_ten_events_per_user_per_day() -> None:
    n = sum(1 for _ in generate_lines(300, 7, 1))
    assert 10_000 < n < 35_000


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    command.add_parser(sub)
    return command.run(parser.parse_args(["generate", *argv]))


def test_cli_writes_the_same_bytes_to_a_file_and_to_stdout(tmp_path, capsys) -> None:
    out = tmp_path / "events.jsonl"
    argv = [
        "--users",
        "20",
        "--days",
        "3",
        "--seed",
        "9",
        "--invalid",
        "0.02",
        "--duplicates",
        "0.1",
    ]
    assert _cli([*argv, "--out", str(out)]) == 0
    assert "generated" in capsys.readouterr().err
    assert _cli(argv) == 0
    printed = capsys.readouterr().out
    chaos = ChaosOptions(invalid=0.02, duplicates=0.1)
    assert out.read_text() == printed == _text(20, 3, 9, chaos)


def test_cli_start_and_argument_errors(capsys) -> None:
    assert _cli(["--users", "2", "--days", "1", "--start", "2026-06-01"]) == 0
    first = json.loads(capsys.readouterr().out.splitlines()[0])
    assert first["occurredAt"].startswith(("2026-05-31", "2026-06-01"))
    with pytest.raises(SystemExit):
        _cli(["--users", "2", "--days", "1", "--invalid", "2"])
    with pytest.raises(SystemExit):
        _cli(["--users", "2", "--days", "1", "--start", "not-a-date"])
