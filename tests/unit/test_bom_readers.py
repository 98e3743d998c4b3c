"""Issue 14: every reader of an event log agrees on a byte-order mark before line 1.

The review found `produce` accepting a BOM that `backfill` refused; since the one line reader
(`jsonl.read_line`) every command agrees. This runs each command that reads an event log over
the same file with a BOM, so a reader that stops going through the line reader is caught.
"""

from __future__ import annotations

import json
from pathlib import Path

from connectors.jsonl import LineError, read_events
from oo_features.generate import generate_lines
from tests.cli import oo_features

BOM = b"\xef\xbb\xbf"


def _logs(tmp_path: Path) -> tuple[Path, int]:
    lines = list(generate_lines(3, 2, seed=5))
    log = tmp_path / "bom.jsonl"
    log.write_bytes(BOM + "\n".join(lines).encode() + b"\n")
    return log, len(lines)


def test_produce_reader_takes_a_bom_on_line_1(tmp_path: Path) -> None:
    log, n = _logs(tmp_path)
    with log.open("rb") as handle:
        got = [item for _, item in read_events(handle)]
    assert len(got) == n and not any(isinstance(item, LineError) for item in got)


def test_every_command_accepts_the_same_bom_file(tmp_path: Path) -> None:
    log, n = _logs(tmp_path)
    first_user = json.loads(log.read_bytes()[len(BOM) :].split(b"\n", 1)[0])["userId"]
    spine = tmp_path / "spine.jsonl"
    spine.write_text(json.dumps({"user_id": first_user, "as_of": "2026-01-02T12:00:00Z"}) + "\n")

    def store(name: str) -> dict[str, str]:
        return {"OO_STORE_URL": f"sqlite:///{tmp_path / name}.db"}

    backfill = oo_features("backfill", str(log), env=store("a"))
    assert f"backfilled {n} events" in backfill.stdout and "rejected 0" in backfill.stdout
    split = oo_features("backfill", str(log), "--processes", "2", env=store("b"))
    assert f"backfilled {n} events" in split.stdout and "rejected 0" in split.stdout
    flow = oo_features("flow", "--from", str(log), env=store("c"))
    assert f"read {n} events, {n} accepted" in flow.stdout and "rejected 0" in flow.stdout
    rows = oo_features(
        "training-set", str(log), "--spine", str(spine), "--out", str(tmp_path / "t.jsonl")
    )
    assert "rejected 0" in rows.stdout
    agreement = oo_features(
        "agreement",
        str(log),
        "--agent",
        "momentum-same",
        "--json",
        env={"OO_AGENT_PACKAGES": "tests.shadow_agents"},
    )
    assert json.loads(agreement.stdout)["skipped_lines"] == 0
