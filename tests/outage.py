"""A private Redis for outage tests: stopped, continued, killed and restarted at will.

Started with the same command line as `oo-features services up` (`oo_services.redis_argv`,
append-only file included), on its own port and folder, so a test that pauses or kills it never
touches the shared services other tests use.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
from confluent_kafka import Consumer, TopicPartition

from connectors import topics
from connectors.codec import decode
from oo_features import services as oo_services
from oo_features.services import redis_node


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.stopped = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 60.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        binary = redis_node._redis_binary(lambda _: None)
        argv = oo_services.redis_argv(binary, self.port, self.directory)
        self.process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout_s
        while True:
            client = redis.Redis.from_url(self.url, socket_timeout=2.0, socket_connect_timeout=1)
            try:
                client.ping()
                return
            except redis.RedisError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"private Redis on {self.url} did not start") from None
                time.sleep(0.1)
            finally:
                client.close()

    def pause(self) -> None:
        """SIGSTOP: connections are accepted by the kernel, nothing is ever answered."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)
        self.stopped = True

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)
        self.stopped = False

    def kill(self) -> None:
        """kill -9, as a crash would."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(30)

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            if self.stopped:
                self.resume()
            self.process.kill()
            self.process.wait(30)

    def __enter__(self) -> PrivateRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def topic_event_ids(config: Mapping[str, Any], prefix: str) -> list[str]:
    """The event id of every message in the two event topics under `prefix` (duplicates
    included), read to their ends with the librdkafka `config` (brokers, and security for a
    secured cluster): what a broker outage must not have lost."""
    consumer = Consumer({**config, "group.id": f"{prefix}check", "enable.auto.commit": False})
    ids: list[str] = []
    try:
        names = topics.event_topics(prefix)
        metadata = consumer.list_topics(timeout=30)
        ends: dict[tuple[str, int], int] = {}
        for name in names:
            for partition in metadata.topics[name].partitions:
                _, high = consumer.get_watermark_offsets(TopicPartition(name, partition), 30)
                if high > 0:
                    ends[(name, partition)] = high
        consumer.assign([TopicPartition(t, p, 0) for t, p in ends])
        deadline = time.monotonic() + 120
        while ends and time.monotonic() < deadline:
            for message in consumer.consume(1000, 1.0):
                value, offset = message.value(), message.offset()
                if message.error() is not None or value is None or offset is None:
                    continue
                ids.append(decode(value).event_id)
                key = (message.topic(), message.partition())
                if key in ends and offset + 1 >= ends[key]:
                    del ends[key]
        assert not ends, f"could not read to the end of {sorted(ends)}"
    finally:
        consumer.close()
    return ids
