"""One CLI error style and exit status (issue 14): `services` exits 2 as its README promises."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli import oo_features


@pytest.mark.parametrize("action", ["up", "down"])
def test_services_that_cannot_start_exit_2_with_one_line(action: str, tmp_path: Path) -> None:
    # A state folder whose services.json is not ours: `services` refuses before starting
    # anything (no process is spawned, so this is a unit test).
    (tmp_path / "services.json").write_text("not json\n")
    result = oo_features("services", action, "--state-dir", str(tmp_path), check=False, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr
    assert lines[-1].startswith(f"oo-features services: error: {action}: "), lines
    assert "services.json is not a services state file" in lines[-1]


def test_a_command_error_is_one_line_with_its_status(tmp_path: Path) -> None:
    result = oo_features("backfill", str(tmp_path / "x.jsonl"), "--processes", "0", check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == "oo-features backfill: error: --processes must be >= 1; got 0"


def test_settings_from_puts_given_options_over_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import argparse

    from oo_features.commands import settings_from
    from serving.settings import Settings

    monkeypatch.setenv("OO_KEY_PREFIX", "env")
    monkeypatch.setenv("OO_TOPIC_PREFIX", "env-")
    monkeypatch.setenv("OO_PORT", "9000")
    args = argparse.Namespace(
        key_prefix="", topic_prefix=None, store_url="sqlite:///x.db", port=None
    )
    settings = settings_from(args)
    # "" is given (no prefix), None is not: both options follow one rule.
    assert (settings.key_prefix, settings.topic_prefix) == ("", "env-")
    assert settings.store_url == "sqlite:///x.db"
    assert settings_from(argparse.Namespace(port=8123), Settings).port == 8123
    assert settings_from(argparse.Namespace(), Settings).port == 9000
