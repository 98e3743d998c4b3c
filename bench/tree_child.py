"""One bench's child process over a source tree, for the benches that compare trees.

The child is the bench's own script with its arguments, run with the tree as its working
directory and first on `PYTHONPATH`, so it imports that tree's packages; it prints its
result as a JSON object on its last line. Failure behaviour: a child that exits non-zero
ends the bench (`SystemExit`) with the tail of its stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def run_in_tree(
    script: str | Path, tree: Path, args: Sequence[str], *, also: Path | None = None
) -> dict[str, Any]:
    """The JSON object `script args` prints last, run in `tree` (`also`: a second import
    path after the tree's, e.g. this checkout for modules an older tree lacks)."""
    path = str(tree) if also is None else f"{tree}{os.pathsep}{also}"
    done = subprocess.run(
        [sys.executable, str(Path(script).resolve()), *args],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"the child of {tree} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))
