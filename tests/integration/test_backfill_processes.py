"""`backfill --processes 2` gives the store `backfill` gives, compared key by key (real Redis
and the embedded SQLite store), on a generated log with every kind of trouble."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis

from connectors.store import open_store
from flows.backfill import line_owner, user_partition
from tests.cli import oo_features

WALL_CLOCK = ("ingest", "computed_at", "created", "expires_at")


@pytest.fixture(scope="module")
def event_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bfp") / "events.jsonl"
    oo_features(
        "generate", "--users", "80", "--days", "14", "--seed", "77", "--out-of-order", "0.03",
        "--duplicates", "0.01", "--too-late", "0.005", "--invalid", "0.003", "--out", str(path),
    )  # fmt: skip
    with path.open("a") as out:  # lines whose user the bytes do not say, decoded everywhere
        out.write('{"eventId":"esc","user\\u0049d":"u00003","occurredAt":"2026-01-19T10:00:00Z",'
                  '"habitChecked":{"habitId":"h"}}\n')  # fmt: skip
        out.write("not json at all\n")
    return path


def _timeless(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _timeless(v) for k, v in value.items() if not any(w in k for w in WALL_CLOCK)}
    if isinstance(value, list):
        return [_timeless(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return _timeless({f: getattr(value, f) for f in value.__dataclass_fields__})
    return value


def _contents(url: str, prefix: str) -> dict[str, Any]:
    store = open_store(url, key_prefix=prefix)
    try:
        users = sorted(store.user_ids())
        return {
            "users": {u: _timeless(store.read_user(u)) for u in users},
            "tombstones": {u: store.tombstone(u) for u in _all_ids()},
        }
    finally:
        store.close()


def _all_ids() -> list[str]:
    return [f"u{i:05d}" for i in range(80)]


def _backfill(path: Path, url: str, prefix: str, processes: int) -> str:
    result = oo_features(
        "backfill", str(path), "--store-url", url, "--key-prefix", prefix,
        "--processes", str(processes), "--rejects", str(path) + f".{prefix}.rejects",
        check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr  # the log has invalid lines
    return result.stdout


def test_line_owner_reads_the_user_or_says_it_cannot() -> None:
    line = b'{"eventId":"e","userId":"u7","occurredAt":"2026-01-01T00:00:00Z"}'
    assert line_owner(line, 3) == user_partition("u7", 3)
    assert line_owner(b'{"userId":"a","userId":"b"}', 3) is None
    assert line_owner(b'{"user\\u0049d":"a"}', 3) is None
    assert line_owner(b"garbage", 3) is None


def test_two_processes_equal_one_on_sqlite(event_log: Path, tmp_path: Path) -> None:
    one, two = f"sqlite:///{tmp_path / 'one.db'}", f"sqlite:///{tmp_path / 'two.db'}"
    out_one = _backfill(event_log, one, "p1", 1)
    out_two = _backfill(event_log, two, "p2", 2)
    assert out_one.split(" into ")[0] == out_two.split(" into ")[0]  # accepted, users
    a, b = _contents(one, "p1"), _contents(two, "p2")
    assert len(a["users"]) > 60 and any(a["tombstones"].values())
    assert a == b
    rejects = [Path(str(event_log) + f".{p}.rejects").read_text() for p in ("p1", "p2")]
    assert rejects[0] == rejects[1] and rejects[0].count("\n") >= 3


def test_two_processes_equal_one_on_redis(services: Any, event_log: Path, key_prefix: str) -> None:
    url = services.redis_url
    one, two = f"{key_prefix}a", f"{key_prefix}b"
    try:
        _backfill(event_log, url, one, 1)
        _backfill(event_log, url, two, 2)
        assert _contents(url, one) == _contents(url, two)
        client = redis.Redis.from_url(url)
        # The prefix is also inside hash tags ({P~fresh}): name both P.
        keys_one = {k.decode().replace(one, "P") for k in client.scan_iter(match=f"*{one}*")}
        keys_two = {k.decode().replace(two, "P") for k in client.scan_iter(match=f"*{two}*")}
        assert keys_one == keys_two and len(keys_one) > 300
        for key in sorted(k for k in keys_one if ":agent:" in k):
            h1, h2 = (
                client.hgetall(key.replace("P", one, 1)),
                client.hgetall(key.replace("P", two, 1)),
            )
            assert _timeless({k.decode(): v for k, v in h1.items()}) == _timeless(
                {k.decode(): v for k, v in h2.items()}
            ), key
    finally:
        from tests.fixtures_services import _delete_keys

        _delete_keys(url, one)
        _delete_keys(url, two)
