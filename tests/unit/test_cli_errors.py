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


# --- issue 11: every failure is one line naming what was wrong; usage errors exit 2 ------


def _one_line_error(result: object) -> str:
    stderr = result.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    return lines[-1]


def test_generate_into_a_missing_directory(tmp_path: Path) -> None:
    out = tmp_path / "missing" / "x.jsonl"
    result = oo_features(
        "generate", "--users", "2", "--days", "1", "--out", str(out), check=False, timeout=60
    )
    assert result.returncode == 2
    assert str(out) in _one_line_error(result)


def test_a_bad_variable_is_named_with_its_value(tmp_path: Path) -> None:
    result = oo_features(
        "backfill", str(tmp_path), env={"OO_PARTITIONS": "zero"}, check=False, timeout=60
    )
    assert result.returncode == 2
    assert "OO_PARTITIONS='zero'" in _one_line_error(result)


def test_serve_names_a_bad_port_variable() -> None:
    result = oo_features("serve", env={"OO_PORT": "abc"}, check=False, timeout=60)
    assert result.returncode == 2
    assert "OO_PORT='abc'" in _one_line_error(result)


def test_serve_refuses_a_nonsense_store_url_before_starting() -> None:
    result = oo_features("serve", env={"OO_STORE_URL": "nonsense"}, check=False, timeout=60)
    assert result.returncode == 2
    line = _one_line_error(result)
    assert "OO_STORE_URL" in line and "nonsense" in line


@pytest.mark.parametrize("command", [["backfill"], ["flow", "--from"]])
def test_a_directory_is_not_an_event_log(command: list[str], tmp_path: Path) -> None:
    result = oo_features(*command, str(tmp_path), check=False, timeout=60)
    assert result.returncode == 2
    line = _one_line_error(result)
    assert "is a directory" in line and str(tmp_path) in line


def test_an_unknown_option_is_named() -> None:
    result = oo_features("--bogus", check=False, timeout=60)
    assert result.returncode == 2
    assert "unrecognized arguments: --bogus" in _one_line_error(result)


def test_flow_from_a_file_with_rejects_says_so_and_exits_1(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    oo_features("generate", "--users", "3", "--days", "2", "--invalid", "0.05", "--out", str(log))
    env = {"OO_STORE_URL": f"sqlite:///{tmp_path / 'f.db'}"}
    flow = oo_features("flow", "--from", str(log), env=env, check=False, timeout=300)
    env["OO_STORE_URL"] = f"sqlite:///{tmp_path / 'g.db'}"
    backfill = oo_features("backfill", str(log), env=env, check=False, timeout=300)

    assert backfill.returncode == 1, backfill.stderr
    assert flow.returncode == 1, flow.stderr
    rejected = int(backfill.stdout.split("rejected ")[1].split()[0])
    assert rejected > 0
    assert f"rejected {rejected} (see {log}.rejects.jsonl)" in flow.stdout
    assert "users into" in flow.stdout and "events" in flow.stdout


def test_every_command_writes_one_rejects_format(tmp_path: Path) -> None:
    import json

    log = tmp_path / "events.jsonl"
    log.write_text('{"eventId": "e1"}\nnot json\n')
    env = {"OO_STORE_URL": f"sqlite:///{tmp_path / 'f.db'}"}
    oo_features("backfill", str(log), "--rejects", str(tmp_path / "b.jsonl"), env=env, check=False)
    oo_features(
        "flow", "--from", str(log), "--rejects", str(tmp_path / "f.jsonl"), env=env, check=False
    )
    for name in ("b.jsonl", "f.jsonl"):
        rows = [json.loads(r) for r in (tmp_path / name).read_text().splitlines()]
        assert [set(row) for row in rows] == [{"line", "source", "reason", "field", "raw"}] * 2
        assert [row["line"] for row in rows] == [1, 2]


def test_demo_has_help_for_every_option() -> None:
    import re

    result = oo_features("demo", "--help", timeout=60)
    options = re.findall(r"^  (--[a-z-]+)(?: [A-Z]+)?\s*(.*)$", result.stdout, re.M)
    assert {name for name, _ in options} >= {"--users", "--days", "--seed", "--port", "--once"}
    assert all(text.strip() for _, text in options), options
    assert "OO_PORT" in result.stdout


def test_demo_honours_oo_port(tmp_path: Path) -> None:
    port = closed_port()
    result = oo_features(
        "demo",
        "--users",
        "2",
        "--days",
        "2",
        "--once",
        "--workdir",
        str(tmp_path),
        env={"OO_PORT": str(port)},
        timeout=300,
    )
    assert f"starting the API on http://127.0.0.1:{port}" in result.stdout + result.stderr


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
