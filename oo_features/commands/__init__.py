"""The `oo-features` subcommands, one module each (`add_parser`, `run`); see `oo_features.cli`.

`settings_from(args)` is how every command reads its settings: the `OO_*` variables, with
each command-line option that was given put over its variable (an option given as ``""`` is
given: ``--topic-prefix ""`` means no prefix). An invalid value is pydantic's
`ValidationError`, which `oo_features.errors` reports naming the variable.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, TypeVar, overload

if TYPE_CHECKING:  # imported when used: `--help` stays fast
    from connectors.settings import ConnectorSettings

S = TypeVar("S", bound="ConnectorSettings")

OPTION_FIELDS = {
    "bootstrap": "kafka_bootstrap",
    "store_url": "store_url",
    "key_prefix": "key_prefix",
    "topic_prefix": "topic_prefix",
    "timeout": "kafka_timeout_s",
    "partitions": "partitions",
    "metrics_port": "flow_metrics_port",
    "host": "host",
    "port": "port",
}
"""Command-line option (argparse dest) -> the settings field it overrides."""


@overload
def settings_from(args: argparse.Namespace) -> ConnectorSettings: ...
@overload
def settings_from(args: argparse.Namespace, cls: type[S]) -> S: ...


def settings_from(args: argparse.Namespace, cls: Any = None) -> Any:
    """`cls()` (default `ConnectorSettings`) from the environment, with the options of `args`
    that were given put over it."""
    if cls is None:
        from connectors.settings import ConnectorSettings

        cls = ConnectorSettings
    overrides: dict[str, Any] = {}
    for option, field in OPTION_FIELDS.items():
        value = getattr(args, option, None)
        if value is not None and field in cls.model_fields:
            overrides[field] = value
    return cls(**overrides)
