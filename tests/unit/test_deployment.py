"""The deployment files agree with the code: settings, CLI commands, README's config table."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from oo_features.cli import COMMANDS, build_parser
from serving.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_parses_and_has_the_four_services() -> None:
    services = compose()["services"]
    assert {"kafka", "redis", "flow", "api"} <= services.keys()
    for name in ("kafka", "redis", "api"):
        assert "healthcheck" in services[name], f"{name} has no health check"
    assert any("/recovery" in v for v in services["flow"]["volumes"])


def test_every_oo_variable_in_compose_is_a_setting() -> None:
    known = {f"OO_{name.upper()}" for name in Settings.model_fields}
    for name, service in compose()["services"].items():
        for variable in service.get("environment", {}):
            if variable.startswith("OO_"):
                assert variable in known, f"service {name} sets {variable}, which no setting reads"


def test_every_command_compose_runs_exists_in_the_cli() -> None:
    parser = build_parser()
    for name in ("flow", "api"):
        command = compose()["services"][name]["command"]
        assert command[0] in COMMANDS
        parser.parse_args(command)  # exits (fails the test) on an unknown flag


def test_readme_configuration_table_is_generated_from_the_settings() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("config_table", ROOT / "scripts/config_table.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (ROOT / "README.md").read_text()
    match = re.search(
        r"<!-- config-table:start -->\n(.*?)\n<!-- config-table:end -->", readme, re.S
    )
    assert match, "README.md lost its config-table markers"
    assert match.group(1).strip() == module.table().strip(), "run: python scripts/config_table.py"


def test_every_subcommand_has_help(capsys) -> None:
    import pytest

    parser = build_parser()
    for name in COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([name, "--help"])
        assert exit_info.value.code == 0
        assert "usage:" in capsys.readouterr().out
