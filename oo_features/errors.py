"""How the CLI reports a failure: one line that names what was wrong, and an exit status.

`describe(exc)` turns what a command let escape into `(message, status)`:

- a settings error (pydantic) names the variable and its value: `OO_PARTITIONS='zero': Input
  should be a valid integer` (a secret's value is never shown), status 2;
- a file error names the file and the operating system's reason, status 2;
- the engine's own errors (`ConnectorError`, `ServingError`) say what they say, status 2;
- a `CommandError` (what a command raises for a bad option, a missing file or service) says
  what it says, with its own status (2 unless it names another);
- anything else is a bug: its type and message, status 1, and `--debug` shows the traceback.

Status 2 is "fix the command line or the environment", 1 "the run found a problem".
Every command reports through here (`cli.main` prints `report`'s line), so there is one style:
`oo-features <command>: error: <message>` on stderr.
"""

from __future__ import annotations

from typing import Any

SECRET_FIELDS = frozenset({"api_token", "orchestrator_api_key", "kafka_properties"})
OK = 0
FAILED = 1
"""The run found a problem (e.g. rejected lines), or a bug."""
USAGE = 2
"""Fix the command line or the environment: a bad option or variable, a missing file or service."""


class CommandError(Exception):
    """A command's failure with its one-line message and exit status (default `USAGE`).

    Commands raise it instead of printing; `cli.main` reports it (`report`) and exits `status`.
    """

    def __init__(self, message: str, status: int = USAGE) -> None:
        super().__init__(message)
        self.status = status


def report(command: str, message: str) -> None:
    """Print the one error line of `command` on stderr: ``oo-features <command>: error: ...``."""
    import sys

    print(f"oo-features {command}: error: {message}", file=sys.stderr, flush=True)


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

    if isinstance(exc, CommandError):
        return str(exc), exc.status
    if isinstance(exc, ValidationError):
        return "invalid setting: " + "; ".join(settings_error_lines(exc)), USAGE
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}", USAGE
    if isinstance(exc, (ConnectorError, ServingError)):
        return str(exc), USAGE
    return f"{type(exc).__name__}: {exc} (a bug; run with --debug for the traceback)", FAILED
