"""How `snapshot_baee2a0.bin` was made: a flow snapshot as the flow at commit baee2a0 (before
ADR 0017 moved the fold to `flows/`) wrote it. Run against that tree, never this one:

    git worktree add /tmp/base baee2a0
    PYTHONPATH=/tmp/base .venv/bin/python tests/unit/data/make_snapshot_baee2a0.py tests/unit/data

One user's first 240 generated events (seed 7) with Kafka positions; the first 160 folded and
written (so the old state carries its write digests), the rest folded and not yet written (the
snapshot is marked pending). `tests/unit/test_user_logic_resume.py` resumes it.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path


def main(out: Path) -> None:
    from connectors import codec
    from connectors.records import Accepted
    from flows.features_flow import _build_logic
    from oo_features.generate import generate_events

    events = list(generate_events(1, 40, 7))[:240]
    assert len({e.user_id for e in events}) == 1, "one user"
    lines = "".join(codec.to_json(e) + "\n" for e in events)
    (out / "snapshot_baee2a0.events.jsonl").write_text(lines)
    items = [
        replace(Accepted.of(e, 1_700_000_000_000 + i), source=("oo.signals.v1", 0), offset=100 + i)
        for i, e in enumerate(events)
    ]
    flush = timedelta(seconds=1)
    logic = _build_logic(flush, flush, True, True, None)
    logic.on_batch(items[:160])
    assert logic.on_notify()[0], "written once"
    logic.on_batch(items[160:])
    snapshot = logic.snapshot()
    assert snapshot[:1] == b"P" and b"connectors.folding" in snapshot, "run it on baee2a0"
    (out / "snapshot_baee2a0.bin").write_bytes(snapshot)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
