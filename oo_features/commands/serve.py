"""`oo-features serve`: the HTTP API (`serving.app`) under uvicorn.

Settings come from `OO_*` variables (`serving.settings.Settings`); `--host` and
`--port` override them. Without `OO_API_TOKEN` only a loopback address may be
bound, and a placeholder token is refused: the command exits 2 with the reason.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the HTTP API (features, tips, feedback, deletion)",
        description=(
            "Serve the FastAPI app with uvicorn. Configured by OO_* environment variables "
            "(store, Kafka, orchestrator, API token); see serving/settings.py."
        ),
    )
    parser.add_argument(
        "--host", default=None, help="address to bind (default: $OO_HOST, else 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=int, default=None, help="port to bind (default: $OO_PORT, else 8000)"
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
        help="uvicorn log level (default: info)",
    )


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from connectors.store import StoreError, check_store_url
    from oo_features.commands import settings_from
    from oo_features.errors import CommandError, settings_error_lines
    from serving.settings import InsecureSettingsError, Settings, check_bind

    try:
        settings = settings_from(args, Settings)
        check_bind(settings.host, settings.api_token)
        # Before uvicorn: a failed startup there exits 3 with a traceback in the log.
        check_store_url(settings.store_url)
    except ValidationError as exc:
        # Each variable with its value, except secrets (a short token is never echoed).
        lines = "; ".join(settings_error_lines(exc))
        raise CommandError(f"refusing to start: {lines}") from exc
    except StoreError as exc:
        raise CommandError(f"refusing to start: OO_STORE_URL: {exc}") from exc
    except InsecureSettingsError as exc:
        raise CommandError(f"refusing to start: {exc}") from exc

    import logging

    import uvicorn

    from serving.app import create_app

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=args.log_level,
        server_header=False,
    )
    return 0
