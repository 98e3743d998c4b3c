"""Run the real `oo-features` command line from tests, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys


def oo_features(
    *args: str,
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = 600,
    rejects_ok: bool = False,
) -> subprocess.CompletedProcess[str]:
    """`oo-features ARGS` in a subprocess with `env` on top of this one's; fails with stderr.

    `rejects_ok`: exit 1 is fine when the command says it rejected records (`flow` and
    `backfill` exit 1 then) and printed no traceback; any other failure still fails.
    """
    result = subprocess.run(
        [sys.executable, "-m", "oo_features.cli", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if (
        rejects_ok
        and result.returncode == 1
        and "Traceback" not in result.stderr
        and "rejected" in result.stdout
    ):
        return result
    if check and result.returncode != 0:
        raise AssertionError(
            f"oo-features {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}"
        )
    return result
