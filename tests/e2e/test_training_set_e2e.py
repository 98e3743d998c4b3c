"""`training-set` against the stream: for every user, the row as of the user's last event
equals what the Bytewax flow stored from the same log (params to 1e-9, extras, version,
snippet text); users deleted in the log have no row and no features; an agent whose consent
was revoked at the end is in neither. Earlier rows of the same run are checked by the
property test (tests/unit/test_training_set.py)."""

from __future__ import annotations

import json
from pathlib import Path

from connectors.codec import to_json
from connectors.store import open_store
from oo_features.generate import ChaosOptions, write_jsonl
from tests.cli import oo_features
from tests.compare import close
from tests.strategies import ev


def test_the_last_row_of_every_user_equals_what_the_stream_stored(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    with log.open("w") as out:
        write_jsonl(
            out, 12, 21, 7, chaos=ChaosOptions(out_of_order=0.05, duplicates=0.02, too_late=0.01)
        )
        end = "2026-01-25T12:00:00"  # after the generated data
        out.write(to_json(ev("z-del", end, "user_deleted", user="u00003")) + "\n")
        out.write(
            to_json(ev("z-rev", end, "consent_changed", user="u00005", consent="tasks")) + "\n"
        )
    users = sorted({json.loads(line)["userId"] for line in log.read_text().splitlines()})
    last: dict[str, str] = {}
    for line in log.read_text().splitlines():
        event = json.loads(line)
        last[event["userId"]] = max(last.get(event["userId"], ""), event["occurredAt"])
    spine = tmp_path / "spine.jsonl"
    spine.write_text(
        "".join(json.dumps({"user_id": u, "as_of": last[u]}) + "\n" for u in reversed(users))
    )
    db = tmp_path / "features.db"
    oo_features(
        "flow", "--from", str(log), "--stop-at-end", "--store-url", f"sqlite:///{db}", timeout=300
    )
    rows_file = tmp_path / "rows.jsonl"
    result = oo_features(
        "training-set", str(log), "--spine", str(spine), "--out", str(rows_file), check=False
    )
    assert result.returncode in (0, 1), result.stderr  # 1: the chaos's rejected lines
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()]

    store = open_store(f"sqlite:///{db}")
    try:
        assert [r["user_id"] for r in rows] == [u for u in reversed(users) if u != "u00003"]
        assert store.read_user("u00003") is None
        for row in rows:
            stored = store.read_user(row["user_id"])
            assert stored is not None
            assert sorted(row["agents"]) == sorted(stored.agents), row["user_id"]
            for agent_id, got in row["agents"].items():
                want = stored.agents[agent_id]
                where = f"{row['user_id']} {agent_id}"
                assert got["version"] == want.version, where
                assert close(got["params"], want.params), where
                assert close(got["extras"], want.extras), where
                assert (got["snippet"] or {}).get("text") == want.snippet, where
        revoked = next(r for r in rows if r["user_id"] == "u00005")
        assert revoked["agents"] == {}
        assert sum(bool(r["agents"]) for r in rows) >= 9
    finally:
        store.close()
