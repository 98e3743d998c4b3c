"""`oo-features produce FILE|-`: validate a JSONL event log and publish the good events to Kafka.

Every line is parsed and validated; valid events are published (key =
user_id) and count as published only once the broker confirms them. Each
rejected line goes to a rejects file (`connectors.records.reject_json`, the format of every
command: line, source, reason, field, raw)
whose path is printed: invalid lines, and valid events the Kafka client refuses
(e.g. larger than the 1 MB message limit). Events the broker does not confirm
(it died, or stopped answering for --timeout) are listed there by event id and
never counted as published; producing the same file again is safe (the flow
drops events whose id it has already folded). The exit status is 0 only when
every line was published.

Exit status: 0 all published; 1 some lines rejected or undelivered; 2 Kafka
unavailable, or bad usage (no bootstrap, unreadable input).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from oo_features.errors import FAILED, OK, CommandError

_PROGRESS_EVERY = 4096  # lines between progress-bar refreshes


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "produce",
        help="publish a JSONL file of events to Kafka",
        description=(__doc__ or "").split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "file", metavar="FILE", help="JSONL file, one canonical-JSON Event a line; - for stdin"
    )
    parser.add_argument(
        "--bootstrap", help="Kafka bootstrap servers (default: $OO_KAFKA_BOOTSTRAP)"
    )
    parser.add_argument(
        "--topic-prefix", help="prefix of every topic name (default: $OO_TOPIC_PREFIX)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="give up when Kafka does not answer for this long "
        "(default: $OO_KAFKA_TIMEOUT_S or 10)",
    )
    parser.add_argument(
        "--partitions",
        type=int,
        help="partitions of topics created when missing (default: $OO_PARTITIONS or 4)",
    )
    parser.add_argument(
        "--rejects",
        metavar="PATH",
        help="where rejected lines go "
        "(default: FILE.rejects.jsonl; for stdin: ./stdin.rejects.jsonl)",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: when stderr is a terminal)",
    )


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from connectors.codec import to_json
    from connectors.exceptions import DeliveryError, KafkaUnavailableError
    from connectors.jsonl import LineError, open_source, read_events, rejects_path_for
    from connectors.kafka import EventProducer
    from connectors.records import RejectsFile
    from oo_features.commands import settings_from

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    settings = settings_from(args)
    bootstrap = settings.kafka_bootstrap
    if not bootstrap:
        raise CommandError("no Kafka to publish to: pass --bootstrap or set OO_KAFKA_BOOTSTRAP")
    timeout_s = settings.kafka_timeout_s
    partitions = settings.partitions
    prefix = settings.topic_prefix

    try:
        source = open_source(args.file)
    except OSError as exc:
        raise CommandError(f"cannot read {args.file}: {exc.strerror or exc}") from exc

    try:
        producer = EventProducer(
            bootstrap=bootstrap,
            topic_prefix=prefix,
            timeout_s=timeout_s,
            partitions=partitions,
            settings=settings,
        )
    except KafkaUnavailableError as exc:
        source.close()
        raise CommandError(f"{exc}; nothing was published") from exc

    rejects = RejectsFile(rejects_path_for(args.file, args.rejects), source=args.file, lazy=True)
    show_progress = err.is_terminal if args.progress is None else args.progress
    started = time.monotonic()
    queued = 0
    try:
        try:
            with source, _progress(err, source, show_progress) as advance:
                for line_no, item in read_events(source):
                    if isinstance(item, LineError):
                        rejects.add_line(item.line_no, item.reason, item.text, item.field)
                    else:
                        try:
                            producer.publish(item, validate=False)  # read_events validated it
                        except DeliveryError as exc:  # refused by the client, e.g. too large
                            rejects.add_line(line_no, f"refused by Kafka: {exc}", to_json(item))
                        else:
                            queued += 1
                    if line_no % _PROGRESS_EVERY == 0:
                        advance()
            report = producer.flush()
        except KafkaUnavailableError as exc:
            report = producer.flush(timeout_s=1.0)
            print(
                f"published {report.published}, rejected {rejects.count}, "
                f"not published {queued - report.published}"
            )
            raise CommandError(f"{exc}; stopped reading {args.file}") from exc
        finally:
            producer.close()
        rejected = rejects.count
        for event_id, reason in report.failed:
            rejects.add_line(None, f"undelivered event {event_id}: {reason}", "")
    finally:
        rejects.close()

    elapsed = time.monotonic() - started
    summary = f"published {report.published}, rejected {rejected}"
    if report.failed:
        summary += f", undelivered {len(report.failed)}"
    rate = report.published / elapsed if elapsed > 0 else 0.0
    print(f"{summary} ({elapsed:.1f} s, {rate:,.0f} events/s)")
    if rejects.count:
        err.print(f"rejected lines written to {rejects.path}")
    return FAILED if rejects.count else OK


@contextlib.contextmanager
def _progress(console: Any, source: IO[bytes], show: bool) -> Iterator[Callable[[], None]]:
    """`advance()`: the shared bar (`oo_features.progress`) over the bytes of `source` read."""
    from oo_features.progress import progress_bar

    total: float | None = None
    try:
        if show and source.seekable():
            total = float(Path(source.name).stat().st_size)
    except (OSError, TypeError):
        total = None
    with progress_bar(
        "publishing", total, show=show, unit="bytes", transient=True, console=console
    ) as bar:

        def advance() -> None:
            with contextlib.suppress(OSError):  # tell() on a pipe
                bar.update(source.tell())

        yield advance
