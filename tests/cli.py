"""Run the real `oo-features` command line from tests, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys


def oo_features(
    *args: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """`oo-features ARGS` in a subprocess with `env` on top of this one's; fails with stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "oo_features.cli", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"oo-features {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}"
        )
    return result
