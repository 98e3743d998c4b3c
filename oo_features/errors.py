"""How the CLI reports a failure: one line that names what was wrong, and an exit status.

`describe(exc)` turns what a command let escape into `(message, status)`:

- a settings error (pydantic) names the variable and its value: `OO_PARTITIONS='zero': Input
  should be a valid integer` (a secret's value is never shown), status 2;
- a file error names the file and the operating system's reason, status 2;
- the engine's own errors (`ConnectorError`, `ServingError`) say what they say, status 2;
- anything else is a bug: its type and message, status 1, and `--debug` shows the traceback.

Status 2 is "fix the command line or the environment", 1 "the run found a problem".
"""

from __future__ import annotations

from typing import Any

SECRET_FIELDS = frozenset({"api_token", "orchestrator_api_key", "kafka_properties"})
USAGE = 2
FAILED = 1


def settings_error_lines(exc: Any, *, prefix: str = "OO_") -> list[str]:
    """One line per invalid variable of a pydantic `ValidationError` of a settings class."""
    lines = []
    for error in exc.errors(include_url=False):
        loc = [str(part) for part in error.get("loc", ())]
        name = loc[0] if loc else ""
        variable = f"{prefix}{name.upper()}" if name else "settings"
        if name in SECRET_FIELDS or "input" not in error or not loc:
            lines.append(f"{variable}: {error['msg']}")
        else:
            lines.append(f"{variable}={error['input']!r:.80}: {error['msg']}")
    return lines


def describe(exc: BaseException) -> tuple[str, int]:
    """The one-line message and the exit status for an error a command let escape."""
    from pydantic import ValidationError

    from connectors.exceptions import ConnectorError
    from serving.exceptions import ServingError

    if isinstance(exc, ValidationError):
        return "invalid setting: " + "; ".join(settings_error_lines(exc)), USAGE
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}", USAGE
    if isinstance(exc, (ConnectorError, ServingError)):
        return str(exc), USAGE
    return f"{type(exc).__name__}: {exc} (a bug; run with --debug for the traceback)", FAILED
