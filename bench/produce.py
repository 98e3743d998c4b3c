"""Throughput of `oo-features produce`: JSONL events per second into a local Kafka, validated.

Measures, in one run and over the same file:

1. bare      - a loop that only `json.loads` each line (the floor of any JSON reader);
2. parse     - `connectors.jsonl.read_events`: parse (fast path) + validate every line;
3. produce   - parse + validate + `EventProducer.publish` + `flush` until every delivery
               report is in (acks=all, idempotent, lz4), i.e. what `produce` does.

and prints events/s of each and their ratio to the bare loop. Target: produce >= 100,000
events/s on one core (`--pin-cpu` pins the whole process, librdkafka threads included,
to one CPU).

    .venv/bin/python bench/produce.py --bootstrap 127.0.0.1:9092            # 1,000,000 events
    .venv/bin/python bench/produce.py --events 100000 --pin-cpu 0
    .venv/bin/python bench/produce.py --file events.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connectors.jsonl import LineError, read_events
from connectors.kafka import EventProducer
from oo_features.services import delete_topics

_START_S = 1_767_225_600  # 2026-01-01T00:00:00Z
_TZS = ("Europe/Paris", "America/New_York", "Asia/Tokyo", "UTC")
_CONTEXTS = ("commuting", "at_desk", "gym", "meeting")
_AGENTS = ("time_of_day", "momentum", "overdue_task", "focus_area", "recent_patterns")
_REACTIONS = ("REACTION_DONE", "REACTION_LIKE", "REACTION_DISMISS", "REACTION_SNOOZE")


def _iso(seconds: int, millis: int | None = None) -> str:
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{text}.{millis:03d}Z" if millis is not None else text + "Z"


def generate(events: int, *, users: int = 5_000, seed: int = 7) -> Iterator[str]:
    """`events` valid canonical-JSON lines over `users` users, a realistic mix of payloads."""
    rng = random.Random(seed)
    kinds = (
        ["taskCreated"] * 20
        + ["taskUpdated"] * 8
        + ["taskCompleted"] * 18
        + ["taskDeleted"] * 3
        + ["habitChecked"] * 12
        + ["calendarEventObserved"] * 12
        + ["moodLogged"] * 6
        + ["contextChanged"] * 6
        + ["tipShown"] * 7
        + ["tipReaction"] * 5
        + ["profileUpdated", "preferenceSet", "consentChanged"]
    )
    step = max(1, 90 * 86_400 // max(events, 1))  # spread over ~90 days
    for i in range(events):
        at = _START_S + i * step
        user = f"u-{rng.randrange(users):05d}"
        kind = rng.choice(kinds)
        task = f"t-{rng.randrange(50_000)}"
        if kind in ("taskCreated", "taskUpdated", "taskCompleted"):
            payload: dict[str, object] = {"taskId": task, "projectId": f"p-{rng.randrange(40)}"}
            if rng.random() < 0.6:
                payload["dueAt"] = _iso(at + rng.randrange(-86_400, 7 * 86_400))
        elif kind == "taskDeleted":
            payload = {"taskId": task}
        elif kind == "habitChecked":
            payload = {"habitId": f"h-{rng.randrange(10)}"}
        elif kind == "calendarEventObserved":
            begin = at + rng.randrange(3_600, 86_400)
            payload = {
                "calendarEventId": f"c-{i}",
                "startsAt": _iso(begin),
                "endsAt": _iso(begin + 1_800 * rng.randrange(1, 5)),
            }
        elif kind == "moodLogged":
            payload = {"score": rng.randint(1, 5)}
        elif kind == "contextChanged":
            payload = {"context": rng.choice(_CONTEXTS), "active": rng.random() < 0.5}
        elif kind == "tipShown":
            payload = {"tipId": f"tip-{i}", "agentIds": rng.sample(_AGENTS, rng.randint(1, 3))}
        elif kind == "tipReaction":
            payload = {"tipId": f"tip-{i - 1}", "reaction": rng.choice(_REACTIONS)}
        elif kind == "profileUpdated":
            payload = {"tz": rng.choice(_TZS)}
        elif kind == "preferenceSet":
            payload = {"agentId": "time_of_day", "param": "preferred_hour", "valueJson": "9"}
        else:
            payload = {"consent": "tasks", "granted": True}
        event: dict[str, object] = {
            "eventId": f"e-{i:08d}",
            "userId": user,
            "occurredAt": _iso(at, rng.randrange(1000)),
        }
        if rng.random() < 0.7:
            event["utcOffsetMinutes"] = rng.choice((0, 60, 120, -300, 540))
        event["source"] = "tip-api" if kind.startswith("tip") else "bench"
        event[kind] = payload
        yield json.dumps(event, separators=(",", ":"))


def _bare(path: Path) -> int:
    count = 0
    loads = json.loads
    with path.open("rb") as lines:
        for line in lines:
            loads(line)
            count += 1
    return count


def _parse(path: Path) -> int:
    count = 0
    with path.open("rb") as lines:
        for _, item in read_events(lines):
            if isinstance(item, LineError):
                raise SystemExit(f"bench input line {item.line_no} is invalid: {item.reason}")
            count += 1
    return count


def _produce(path: Path, bootstrap: str, prefix: str, partitions: int) -> tuple[int, float]:
    producer = EventProducer(bootstrap=bootstrap, topic_prefix=prefix, partitions=partitions)
    started = time.perf_counter()
    with path.open("rb") as lines:
        for _, item in read_events(lines):
            if isinstance(item, LineError):
                raise SystemExit(f"bench input line {item.line_no} is invalid: {item.reason}")
            producer.publish(item, validate=False)
        report = producer.flush()
    elapsed = time.perf_counter() - started
    producer.close()
    if report.failed:
        raise SystemExit(f"{len(report.failed)} events undelivered, e.g. {report.failed[:3]}")
    return report.published, elapsed


def _timed(label: str, func: object, *args: object) -> tuple[int, float, float]:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    count = func(*args)  # type: ignore[operator]
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    print(f"  {label:<8} {count:>10,} events  {wall:7.2f} s  {count / wall:>10,.0f} events/s")
    return count, wall, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000, help="events to generate")
    parser.add_argument("--file", type=Path, help="use this JSONL file instead of generating")
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("OO_KAFKA_BOOTSTRAP"),
        help="Kafka bootstrap servers (default: $OO_KAFKA_BOOTSTRAP)",
    )
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--pin-cpu", type=int, metavar="CPU", help="run on this one CPU only")
    parser.add_argument(
        "--keep-topics", action="store_true", help="keep the bench's topics afterwards"
    )
    args = parser.parse_args(argv)
    if not args.bootstrap:
        parser.error("no Kafka: pass --bootstrap or set OO_KAFKA_BOOTSTRAP")
    if args.pin_cpu is not None:
        os.sched_setaffinity(0, {args.pin_cpu})  # before librdkafka starts its threads

    with tempfile.TemporaryDirectory(prefix="oo-bench-") as tmp:
        path = args.file
        if path is None:
            path = Path(tmp) / "events.jsonl"
            t0 = time.perf_counter()
            with path.open("w") as out:
                for line in generate(args.events):
                    out.write(line + "\n")
            print(f"generated {args.events:,} events in {time.perf_counter() - t0:.1f} s")
        size_mb = path.stat().st_size / 1e6
        cpus = os.sched_getaffinity(0)
        print(f"input {path} ({size_mb:.0f} MB); CPUs allowed: {sorted(cpus)}")
        _bare(path)  # warm the page cache so each pass reads from memory alike

        prefix = f"bench-{uuid.uuid4().hex[:8]}-"
        bare_n, bare_s, _ = _timed("bare", _bare, path)
        parse_n, parse_s, _ = _timed("parse", _parse, path)
        cpu0 = time.process_time()
        produced, produce_s = _produce(path, args.bootstrap, prefix, args.partitions)
        produce_cpu = time.process_time() - cpu0
        print(
            f"  {'produce':<8} {produced:>10,} events  {produce_s:7.2f} s  "
            f"{produced / produce_s:>10,.0f} events/s  "
            f"(process CPU {produce_cpu:.2f} s = {produce_cpu / produce_s:.2f} cores)"
        )
        if not args.keep_topics:
            delete_topics(args.bootstrap, prefix)

    bare_rate, parse_rate = bare_n / bare_s, parse_n / parse_s
    produce_rate = produced / produce_s
    print()
    print(f"produce: {produce_rate:,.0f} events/s (target 100,000)")
    print(
        f"ratio to bare json.loads loop: parse {parse_rate / bare_rate:.2f}, "
        f"produce {produce_rate / bare_rate:.2f}"
    )
    return 0 if produce_rate >= 100_000 else 1


if __name__ == "__main__":
    sys.exit(main())
