"""The CLI fails clearly: missing files and unreachable services name what was wrong, exit 2."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.cli import oo_features


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["backfill", "{missing}"], "does not exist"),
        (["flow", "--from", "{missing}"], "does not exist"),
        (["produce", "{missing}", "--bootstrap", "127.0.0.1:{port}"], "cannot read"),
    ],
    ids=["backfill", "flow", "produce"],
)
def test_missing_file(args: list[str], says: str, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.jsonl")
    argv = [a.format(missing=missing, port=closed_port()) for a in args]
    result = oo_features(*argv, check=False, timeout=60)
    assert result.returncode == 2
    assert says in result.stderr and "nope.jsonl" in result.stderr


def test_unreachable_kafka(tmp_path: Path) -> None:
    port = closed_port()
    result = oo_features(
        "flow",
        "--bootstrap",
        f"127.0.0.1:{port}",
        "--store-url",
        f"sqlite:///{tmp_path}/x.db",
        "--stop-at-end",
        env={"OO_KAFKA_TIMEOUT_S": "2"},
        check=False,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"Kafka at 127.0.0.1:{port} did not answer" in result.stderr


def test_unreachable_store(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    log.write_text(
        '{"eventId":"e1","userId":"u1","occurredAt":"2026-05-01T06:30:00Z","moodLogged":{"score":3}}\n'
    )
    port = closed_port()
    result = oo_features(
        "backfill", str(log), "--store-url", f"redis://127.0.0.1:{port}/0", check=False, timeout=60
    )
    assert result.returncode == 2
    assert f"127.0.0.1:{port}" in result.stderr and "unreachable" in result.stderr


def test_training_set_names_a_missing_file_and_bad_spine_lines(tmp_path: Path) -> None:
    spine = tmp_path / "spine.jsonl"
    spine.write_text('{"user_id": "u1", "as_of": "2026-05-01T00:00:00Z"}\n{"user_id": "u1"}\n')
    events = tmp_path / "events.jsonl"
    events.write_text("")
    out = tmp_path / "out.jsonl"

    missing = oo_features(
        "training-set", str(tmp_path / "nope.jsonl"), "--spine", str(spine), "--out", str(out),
        check=False, timeout=60,
    )  # fmt: skip
    bad = oo_features(
        "training-set", str(events), "--spine", str(spine), "--out", str(out),
        check=False, timeout=60,
    )  # fmt: skip
    bad_since = oo_features("ledger", "export", "--since", "yesterday", check=False, timeout=60)

    assert missing.returncode == 2 and "nope.jsonl" in missing.stderr
    assert bad.returncode == 2 and "spine.jsonl:2: 'as_of'" in bad.stderr
    assert not out.exists() or out.read_text() == ""
    assert bad_since.returncode == 2 and "--since" in bad_since.stderr
