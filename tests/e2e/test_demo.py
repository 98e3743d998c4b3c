"""The first run: `oo-features demo` with nothing else running shows features and a tip,
and its features equal what the backfill computes from the same generated file."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from connectors.store import open_store
from flows.backfill import backfill


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_demo_on_embedded_defaults_shows_a_tip_and_equals_backfill(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OO_")}
    workdir = tmp_path / "demo"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "oo_features.cli",
            "demo",
            "--users",
            "30",
            "--days",
            "30",
            "--once",
            "--port",
            str(free_port()),
            "--workdir",
            str(workdir),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "tip (fallback: orchestrator_not_configured):" in out, out
    assert "The API is at http://127.0.0.1:" in out

    demo_store = open_store(f"sqlite:///{workdir / 'features.db'}")
    batch_store = open_store(f"sqlite:///{tmp_path / 'backfill.db'}")
    report = backfill(
        workdir / "events.jsonl", batch_store, rejects_path=tmp_path / "rejects.jsonl"
    )
    assert report.rejected == 0
    users = sorted(demo_store.user_ids())
    assert users == sorted(batch_store.user_ids()) and len(users) == 30
    for user_id in users:
        demo, batch = demo_store.read_user(user_id), batch_store.read_user(user_id)
        assert demo is not None and batch is not None
        assert {a: s.params for a, s in demo.agents.items()} == {
            a: s.params for a, s in batch.agents.items()
        }, user_id
        assert {a: s.snippet for a, s in demo.agents.items()} == {
            a: s.snippet for a, s in batch.agents.items()
        }, user_id
