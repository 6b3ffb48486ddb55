"""Settings are validated at start and errors name the variable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from keyart.settings import Settings, SettingsError, load_settings


def test_defaults_are_valid() -> None:
    settings = load_settings()
    assert settings.flush_interval_ms == 500
    assert settings.attribution_window_s == 1800


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYART_FLUSH_INTERVAL_MS", "250")
    assert load_settings().flush_interval_ms == 250


@pytest.mark.parametrize(
    "variable, value",
    [
        ("KEYART_FLUSH_INTERVAL_MS", "fast"),
        ("KEYART_FLUSH_INTERVAL_MS", "1"),
        ("KEYART_KAFKA_BOOTSTRAP", "no-port"),
        ("KEYART_REDIS_URL", "http://x"),
        ("KEYART_WINDOW_KIND", "forever"),
        ("KEYART_EPSILON", "2"),
        ("KEYART_ATTRIBUTION_WINDOW_S", "inf"),
        ("KEYART_REDIS_BUDGET_MS", "nan"),
    ],
)
def test_wrong_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings()


def test_the_collector_skew_cannot_pass_the_learner_skew(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KEYART_MAX_CLOCK_SKEW_S", "120")
    monkeypatch.setenv("KEYART_COLLECT_CLOCK_SKEW_S", "180")
    with pytest.raises(
        SettingsError, match="KEYART_COLLECT_CLOCK_SKEW_S: .*KEYART_MAX_CLOCK_SKEW_S"
    ):
        load_settings()


def test_env_file(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = tmp_path / "keyart.env"
    env.write_text("KEYART_WINDOW_BUCKETS=12\n")
    monkeypatch.setenv("KEYART_ENV_FILE", str(env))
    assert load_settings().window_buckets == 12


def test_missing_env_file_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYART_ENV_FILE", "/nonexistent/keyart.env")
    with pytest.raises(SettingsError, match="KEYART_ENV_FILE"):
        load_settings()


def test_settings_are_immutable() -> None:
    settings = Settings()
    with pytest.raises(ValueError):
        settings.flush_interval_ms = 1  # type: ignore[misc]


def test_cli_fails_at_start_naming_the_setting() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "keyart.cli", "settings"],
        env={"KEYART_ATTRIBUTION_WINDOW_S": "-5", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "KEYART_ATTRIBUTION_WINDOW_S" in result.stderr
