"""Serving settings: OO_* variables, defaults, and the refusal to expose the API without a token."""

from __future__ import annotations

import argparse
import os

import pytest
from pydantic import SecretStr, ValidationError

from oo_features import cli
from oo_features.commands import serve
from serving.settings import InsecureSettingsError, Settings, check_bind, is_loopback

GOOD_TOKEN = "k7Vq2mXp9LrT4wZs8NcB"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in os.environ if name.startswith("OO_")]:
        monkeypatch.delenv(name)


def test_defaults() -> None:
    s = Settings()

    assert (s.host, s.port) == ("127.0.0.1", 8000)
    assert s.api_token is None
    assert s.orchestrator_url is None
    assert s.orchestrator_model == "tip-generator"
    assert s.orchestrator_retries == 1
    assert s.breaker_failure_threshold == 5
    assert str(s.feedback_log) == ".oo/feedback.jsonl"
    assert s.kafka_bootstrap is None  # inherited from ConnectorSettings


def test_reads_oo_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OO_API_TOKEN", GOOD_TOKEN)
    monkeypatch.setenv("OO_HOST", "0.0.0.0")
    monkeypatch.setenv("OO_ORCHESTRATOR_URL", "http://llm:4000/")
    monkeypatch.setenv("OO_BREAKER_COOLDOWN_S", "2.5")

    s = Settings()

    assert isinstance(s.api_token, SecretStr)
    assert s.api_token.get_secret_value() == GOOD_TOKEN
    assert GOOD_TOKEN not in repr(s)
    assert s.host == "0.0.0.0"
    assert s.orchestrator_url == "http://llm:4000"
    assert s.breaker_cooldown_s == 2.5


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"])
def test_loopback_without_token_is_fine(host: str) -> None:
    assert is_loopback(host)
    assert Settings(host=host).api_token is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "api.example.com", ""])
def test_no_token_and_non_loopback_is_refused(host: str) -> None:
    with pytest.raises(ValidationError, match="without OO_API_TOKEN"):
        Settings(host=host)
    with pytest.raises(InsecureSettingsError):
        check_bind(host, None)


def test_token_allows_any_host() -> None:
    assert Settings(host="0.0.0.0", api_token=GOOD_TOKEN).host == "0.0.0.0"


@pytest.mark.parametrize("token", ["changeme", "CHANGEME", "secret", " ", ""])
def test_placeholder_token_is_refused_even_on_loopback(token: str) -> None:
    with pytest.raises(ValidationError, match="placeholder"):
        Settings(api_token=token)


def test_short_token_is_refused() -> None:
    with pytest.raises(ValidationError, match="at least 16"):
        Settings(api_token="abc123")


def test_serve_command_refuses_to_bind_publicly_without_token(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # `serve` raises CommandError; `cli.main` reports it as one line and exits 2.
    assert cli.main(["serve", "--host", "0.0.0.0"]) == 2
    assert "without OO_API_TOKEN" in capsys.readouterr().err


def test_serve_command_refuses_placeholder_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OO_API_TOKEN", "changeme")
    assert cli.main(["serve"]) == 2
    assert "placeholder" in capsys.readouterr().err


def test_serve_parser_flags() -> None:
    parser = argparse.ArgumentParser()
    serve.add_parser(parser.add_subparsers(dest="command"))

    args = parser.parse_args(["serve", "--host", "::1", "--port", "9001"])
    assert (args.host, args.port) == ("::1", 9001)
    defaults = parser.parse_args(["serve"])
    assert (defaults.host, defaults.port) == (None, None)  # resolved from Settings in run()


def test_serve_command_never_echoes_the_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OO_API_TOKEN", "Sh0rtS3cret")

    assert cli.main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "at least 16" in err
    assert "Sh0rtS3cret" not in err
