"""`oo-features export --out FILE`: the event topics' content as an event log, in the flow's order.

The inverse of `produce`. It reads every partition of the signals and feedback topics to
the end found, through the flow's own source (`connectors.kafka_source.KafkaEventSource`
with `tail=False`), so each user's events come out in exactly the order the flow folds
them (ADR 0006), and writes them as canonical JSON, one event per line: `backfill` of the
file computes what the flow stores. Messages the flow would dead-letter (undecodable,
invalid, key not the event's user) are not exported; each is reported, with its topic,
partition, offset and reason, in a rejects file (JSON lines) and counted on stdout.

Users are written partition index by partition index; only the order within a user
matters to the features (state is per user). Exit status: 0, or 1 when some messages were
rejected (the export is complete otherwise), 2 when Kafka or a topic is missing.
"""

from __future__ import annotations

import argparse
import sys

from oo_features.errors import CommandError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write the event topics' content as an event log, in the flow's order",
        description="Read oo.signals.v1 and oo.feedback.v1 to their current end and write every "
        "valid event as canonical JSON, one per line, in the order the flow folds them, so "
        "`oo-features backfill FILE` computes what the flow stores. Messages the flow would "
        "dead-letter are reported in a rejects file, not exported.",
    )
    p.add_argument("--out", required=True, help="the event log to write ('-' for stdout)")
    p.add_argument(
        "--rejects", help="where rejected messages are reported (default OUT.rejects.jsonl)"
    )
    p.add_argument("--bootstrap", help="override OO_KAFKA_BOOTSTRAP")
    p.add_argument("--topic-prefix", help="override OO_TOPIC_PREFIX")


def run(args: argparse.Namespace) -> int:
    import json

    from connectors import topics
    from connectors.codec import to_json
    from connectors.exceptions import ConnectorError
    from connectors.jsonl import rejects_path_for
    from connectors.kafka_source import KafkaEventSource
    from connectors.records import Accepted
    from oo_features.commands import settings_from

    settings = settings_from(args)
    bootstrap = settings.kafka_bootstrap
    if not bootstrap:
        raise CommandError("no Kafka: set OO_KAFKA_BOOTSTRAP or pass --bootstrap")
    prefix = settings.topic_prefix
    names = topics.event_topics(prefix)
    source = KafkaEventSource(bootstrap, names, tail=False, settings=settings)
    try:
        parts = source.list_parts()
    except (RuntimeError, ConnectorError) as exc:
        raise CommandError(str(exc)) from exc
    to_stdout = args.out == "-"
    rejects_path = rejects_path_for(args.out, args.rejects, stdin_name="export")
    exported = rejected = 0
    out = sys.stdout if to_stdout else open(args.out, "w", encoding="utf-8")  # noqa: SIM115
    try:
        with open(rejects_path, "w", encoding="utf-8") as rejects:
            for name in parts:
                partition = source.build_part("export", name, None)
                try:
                    while True:
                        try:
                            batch = partition.next_batch()
                        except StopIteration:
                            break
                        for _, record in batch:
                            if isinstance(record, Accepted):
                                out.write(to_json(record.event) + "\n")
                                exported += 1
                                continue
                            rejected += 1
                            rejects.write(
                                json.dumps(
                                    {
                                        "topic": record.origin,
                                        "partition": record.partition,
                                        "offset": record.offset,
                                        "reason": record.reason,
                                        "raw": record.raw.decode("utf-8", "replace"),
                                    }
                                )
                                + "\n"
                            )
                finally:
                    partition.close()
    finally:
        if not to_stdout:
            out.close()
    print(
        f"exported {exported} events from {', '.join(names)}; rejected {rejected}"
        + (f" (see {rejects_path})" if rejected else ""),
        file=sys.stderr if to_stdout else sys.stdout,
    )
    return 1 if rejected else 0
