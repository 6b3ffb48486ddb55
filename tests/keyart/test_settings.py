"""Settings are validated at start and errors name the variable."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from keyart.settings import Settings, SettingsError, load_settings, shown_url


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
        ("KEYART_FM_MAX_CONTEXT_FEATURES", "-1"),
        ("KEYART_FM_CONTEXT_FEATURES", "age,,night"),
        ("KEYART_FM_CONTEXT_FEATURES", "x" * 65),
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


def test_docstring_examples() -> None:
    import doctest

    import keyart.settings

    result = doctest.testmod(keyart.settings)
    assert result.failed == 0 and result.attempted > 0


def test_settings_command_masks_secrets(tmp_path) -> None:
    from typer.testing import CliRunner

    from keyart.cli import app

    token, secret = "admin-token-" + "a" * 20, "signing-secret-b"
    env = {
        "KEYART_STATE_DIR": str(tmp_path),
        "KEYART_ADMIN_TOKEN": token,
        "KEYART_TOKEN_SECRET": secret,
        "KEYART_REDIS_URL": "redis://keyart:hunter2@cache.internal:6380/1",
        "KEYART_DATABASE_URL": "postgresql+psycopg://ana:pg-pass@db/keyart"
        "?sslmode=require&password=pg-pass",
    }
    result = CliRunner().invoke(app, ["settings"], env=env)
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    for hidden in (token, secret, "hunter2", "pg-pass"):
        assert hidden not in result.stdout
    assert lines["KEYART_ADMIN_TOKEN"].split()[1:3] == ["set", f"({len(token)}"]
    assert lines["KEYART_TOKEN_SECRET"].split()[1:3] == ["set", f"({len(secret)}"]
    assert lines["KEYART_REDIS_URL"].split()[1] == (
        "redis://keyart:***@cache.internal:6380/1"
    )
    assert lines["KEYART_DATABASE_URL"].split()[1] == (
        "postgresql+psycopg://ana:***@db/keyart?sslmode=require&password=***"
    )
    assert lines["KEYART_FLUSH_INTERVAL_MS"].split()[1] == "500"

    unset = CliRunner().invoke(
        app,
        ["settings"],
        env={"KEYART_STATE_DIR": str(tmp_path), "KEYART_ADMIN_TOKEN": None},
    )
    shown = {line.split()[0]: line for line in unset.stdout.splitlines()}
    assert shown["KEYART_ADMIN_TOKEN"].split()[1] == "(empty)"


def test_settings_command_writes_values_as_the_variables_take_them(
    tmp_path,
) -> None:
    """Unset, empty and boolean values read as the README's table writes them
    and as the variables accept them, not as Python's None, '' and False."""
    from typer.testing import CliRunner

    from keyart.cli import app

    env = {
        "KEYART_STATE_DIR": str(tmp_path),
        "KEYART_RANKER_PATH": None,
        "KEYART_AUTO_APPROVE_SCORE": None,
        "KEYART_VIDEO_ROOTS": None,
        "KEYART_SPLIT_BY_SEGMENT": None,
        "KEYART_SPLIT_BY_PLACEMENT": "1",
    }
    result = CliRunner().invoke(app, ["settings"], env=env)
    assert result.exit_code == 0, result.output
    values = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()}
    assert values["KEYART_RANKER_PATH"] == "unset"
    assert values["KEYART_AUTO_APPROVE_SCORE"] == "unset"
    assert values["KEYART_VIDEO_ROOTS"] == "(empty)"
    assert values["KEYART_SPLIT_BY_SEGMENT"] == "false"
    assert values["KEYART_SPLIT_BY_PLACEMENT"] == "true"
    assert "fm_max_context_features" not in result.stdout


def test_misspelled_variable_is_reported_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Unique per run (each name is reported once per process), and split so
    # that the repository scan below does not take it for a real variable.
    misspelled = "KEYART_" + "FLUSH_INTERVL_MS_" + uuid.uuid4().hex[:4].upper()
    monkeypatch.setenv(misspelled, "250")
    monkeypatch.setenv("KEYART_LOG_LEVEL", "DEBUG")  # read by the keyart command
    monkeypatch.setenv("KEYART_SEED", "3")
    with caplog.at_level(logging.WARNING, logger="keyart"):
        assert load_settings().flush_interval_ms == 500
        load_settings()
    reports = [r.getMessage() for r in caplog.records]
    assert reports == [
        f"{misspelled} is not a keyart setting and is ignored "
        "(did you mean KEYART_FLUSH_INTERVAL_MS?)"
    ]


def test_misspelled_variable_in_the_env_file_is_reported_naming_the_file(
    tmp_path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    suffix = uuid.uuid4().hex[:4].upper()
    misspelled = "KEYART_" + "WINDOW_BUKETS_" + suffix
    unprefixed = "WINDOW_BUCKETS_" + suffix
    env = tmp_path / "keyart.env"
    env.write_text(
        f"KEYART_WINDOW_BUCKETS=12\n{misspelled}=13\n{unprefixed}=14\n"
        "KEYART_LOG_JSON=1\n"
    )
    monkeypatch.setenv("KEYART_ENV_FILE", str(env))
    with caplog.at_level(logging.WARNING, logger="keyart"):
        assert load_settings().window_buckets == 12
        load_settings()
    reports = sorted(r.getMessage() for r in caplog.records)
    assert reports == sorted(
        [
            f"{misspelled} in {env} is not a keyart setting and is ignored "
            "(did you mean KEYART_WINDOW_BUCKETS?)",
            f"{unprefixed} in {env} is not a keyart setting and is ignored "
            "(did you mean KEYART_WINDOW_BUCKETS?)",
            f"KEYART_LOG_JSON in {env} is read from the environment only and is "
            "ignored here (set it in the environment)",
        ]
    )


def test_every_keyart_variable_in_the_repository_is_known() -> None:
    from keyart.settings import OTHER_VARIABLES

    root = Path(__file__).resolve().parents[2]
    suffixes = {".py", ".md", ".yml", ".yaml", ".toml", ".sh", ".js", ".html"}
    named = {"Makefile", "Dockerfile"}
    skip = {".git", ".venv", ".cache", "node_modules", "test-artifacts"}
    found: dict[str, Path] = {}
    for path in root.rglob("*"):
        if skip & set(path.relative_to(root).parts) or not path.is_file():
            continue
        if path.suffix in suffixes or path.name in named:
            for name in re.findall(r"KEYART_[A-Z0-9_]*[A-Z0-9]", path.read_text()):
                found.setdefault(name, path)
    fields = {f"KEYART_{name.upper()}" for name in Settings.model_fields}
    unknown = {name: str(path) for name, path in found.items()}
    unknown = {k: v for k, v in unknown.items() if k not in fields | OTHER_VARIABLES}
    assert "KEYART_ENV_FILE" in found and unknown == {}


def test_a_lower_learner_skew_alone_lowers_the_collector_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KEYART_MAX_CLOCK_SKEW_S", "30")
    settings = load_settings()
    assert settings.collect_clock_skew_s == 30.0


def test_a_password_not_percent_encoded_is_masked_too(tmp_path) -> None:
    # SQLAlchemy reads the password up to the "@", "/", "?" and "#" included,
    # where urlsplit ends the host early and saw no password at all.
    import sqlalchemy
    from typer.testing import CliRunner

    from keyart.cli import app

    database = "postgresql://ana:pg/pa#ss?1@db/keyart?sslmode=require"
    assert sqlalchemy.make_url(database).password == "pg/pa#ss?1"
    env = {
        "KEYART_STATE_DIR": str(tmp_path),
        "KEYART_DATABASE_URL": database,
        "KEYART_REDIS_URL": "redis://:hun@ter2@cache:6379/0",
    }
    result = CliRunner().invoke(app, ["settings"], env=env)
    assert result.exit_code == 0, result.output
    assert "pg/pa" not in result.stdout and "ter2" not in result.stdout
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert lines["KEYART_DATABASE_URL"].split()[1] == (
        "postgresql://ana:***@db/keyart?sslmode=require"
    )
    assert lines["KEYART_REDIS_URL"].split()[1] == "redis://:***@cache:6379/0"


def test_a_url_without_a_password_is_shown_as_written() -> None:
    # Rebuilt by urlsplit, an absolute SQLite path lost a slash: another file.
    for url in ("sqlite:////var/lib/keyart/catalog.db", "sqlite:///var/catalog.db"):
        assert shown_url(url) == url
    assert shown_url("unix:///run/redis.sock?password=pw") == (
        "unix:///run/redis.sock?password=***"
    )


@pytest.mark.parametrize(
    "url",
    [
        "reddis://:hunter2@cache:6379/0",  # a typo in the scheme
        "redis://ana:hun/ter2@cache:6379/0",  # redis-py took "hun" for the port
        "redis://:hun#ter2@cache:6379/0",
        "redis://:hunter2@[cache:6379/0",  # urlsplit refuses the host
    ],
)
def test_a_redis_url_keyart_refuses_is_named_without_its_password(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("KEYART_REDIS_URL", url)
    with pytest.raises(SettingsError) as refused:
        load_settings()
    message = str(refused.value)
    assert "KEYART_REDIS_URL" in message
    assert "hun" not in message and "ter2" not in message, message


def test_an_env_file_that_is_not_utf8_is_named(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = tmp_path / "keyart.env"
    env.write_bytes(b"KEYART_WINDOW_BUCKETS=12\xff\n")
    monkeypatch.setenv("KEYART_ENV_FILE", str(env))
    with pytest.raises(SettingsError, match="KEYART_ENV_FILE: cannot read .*UTF-8"):
        load_settings()


def test_an_unreadable_env_file_is_named(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = tmp_path / "keyart.env"
    env.write_text("KEYART_WINDOW_BUCKETS=12\n")
    env.chmod(0)
    if os.access(env, os.R_OK):
        # Root reads a file whatever its mode; reading this regular file of
        # Linux fails with EIO at offset 0, for every user.
        env = Path("/proc/self/mem")
    monkeypatch.setenv("KEYART_ENV_FILE", str(env))
    with pytest.raises(SettingsError, match="KEYART_ENV_FILE: cannot read '.*': "):
        load_settings()


def test_a_line_the_env_file_parser_cannot_read_is_reported_once(
    tmp_path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    env = tmp_path / "keyart.env"
    env.write_text("KEYART_WINDOW_BUCKETS=12\nnot a setting line\n")
    monkeypatch.setenv("KEYART_ENV_FILE", str(env))
    with caplog.at_level(logging.WARNING):
        assert load_settings().window_buckets == 12
    reports = [r.getMessage() for r in caplog.records if "line 2" in r.getMessage()]
    assert len(reports) == 1, reports
