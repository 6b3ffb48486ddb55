"""The `keyart` console command: one subcommand per process.

Each package adds its subcommands through a `register(app)` function in its
own `cli` module, which imports its heavy dependencies inside the command so
that `keyart --help` stays fast.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import sys
import threading

import typer

from keyart.settings import (
    Settings,
    SettingsError,
    load_settings,
    shown_url,
    shown_value,
)

__all__ = ["app", "settings_for_cli"]

logger = logging.getLogger("keyart")

app = typer.Typer(
    name="keyart",
    help=(
        "Pick each user's poster with streaming bandits; make posters from video."
        "\n\n\b\nExamples:\n"
        "  keyart up --detach      # local broker and Redis\n"
        "  keyart streams          # the learner\n"
        "  keyart gateway          # select API, collector, dashboard\n"
        "  keyart demo --short     # the whole loop on real video\n"
        "  keyart down"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Packages whose cli module registers subcommands, in help order.
COMMAND_MODULES = (
    "streams.cli",
    "gateway.cli",
    "workers.cli",
    "producers.cli",
    "keyart.ops_cli",
    "bandits.cli",
    "ranking.cli",
)


def settings_for_cli(**overrides: object) -> Settings:
    """Settings for a command, pointed at a running local stack when there is one.

    An explicit `KEYART_KAFKA_BOOTSTRAP` or `KEYART_REDIS_URL` wins over the
    stack's state file. A wrong value exits with the setting's name.
    """
    from keyart.stack import read_state

    try:
        settings = load_settings(**overrides)
        info = read_state(settings.state_dir)
        if info is not None:
            found: dict[str, object] = {}
            if "KEYART_KAFKA_BOOTSTRAP" not in os.environ:
                found["kafka_bootstrap"] = info.kafka_bootstrap
            if "KEYART_REDIS_URL" not in os.environ:
                found["redis_url"] = info.redis_url
            if found:
                settings = load_settings(**{**found, **overrides})
    except SettingsError as error:
        typer.secho(str(error), fg="red", err=True)
        raise typer.Exit(2) from None
    return settings


def configure_logging(level: str = "INFO", as_json: bool = False) -> None:
    """Configure the root logger for a keyart process (never called by libraries)."""
    from keyart.logs import configure

    configure(level, as_json=as_json)


@app.callback()
def main(
    log_level: str = typer.Option("INFO", envvar="KEYART_LOG_LEVEL", help="Log level."),
    log_json: bool = typer.Option(
        False, "--log-json", envvar="KEYART_LOG_JSON", help="One JSON object a line."
    ),
) -> None:
    """keyart: per-user key art with streaming bandits."""
    configure_logging(log_level, as_json=log_json)


@app.command()
def up(
    detach: bool = typer.Option(
        False, "--detach", "-d", help="Start and return; stop later with keyart down."
    ),
) -> None:
    """Start the local broker and Redis (no Docker needed).

    Examples: `keyart up` (Ctrl-C stops it), `keyart up --detach`.
    """
    from keyart.stack import LocalStack, StackError, read_state

    settings = settings_for_cli()
    running = read_state(settings.state_dir)
    if running is not None:
        typer.echo(
            f"already up: broker {running.kafka_bootstrap}, "
            f"redis {shown_url(running.redis_url)}"
        )
        raise typer.Exit(0)
    stack = LocalStack(settings, die_with_parent=not detach)
    try:
        info = stack.start()
    except StackError as error:
        typer.secho(f"keyart up: {error}", fg="red", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"broker  {info.kafka_bootstrap}")
    typer.echo(f"redis   {shown_url(info.redis_url)}")
    typer.echo(f"state   {settings.state_dir / 'stack.json'}")
    for key, value in info.env().items():
        if shown_url(value) == value:
            typer.echo(f"export {key}={value}")
        else:  # a Redis of the settings, with its password: theirs to export
            typer.echo(f"# {key} as in the settings: {shown_url(value)}")
    if detach:
        return
    stopped = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        stopped.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    typer.echo("up; Ctrl-C or `keyart down` stops it")
    stopped.wait()
    stack.stop()
    typer.echo("stopped")


@app.command()
def down() -> None:
    """Stop the local stack that `keyart up` started.

    Example: `keyart down`.
    """
    from keyart.stack import stop_from_state

    settings = load_settings()
    info = stop_from_state(settings.state_dir)
    if info is None:
        typer.echo("nothing to stop")
        return
    if info.redis_pid is None:  # keyart up found a Redis already answering
        typer.echo(
            f"stopped broker {info.kafka_bootstrap}; left redis "
            f"{shown_url(info.redis_url)}"
            " running (keyart did not start it)"
        )
    else:
        typer.echo(
            f"stopped broker {info.kafka_bootstrap} and redis "
            f"{shown_url(info.redis_url)}"
        )


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Say where the local stack listens, if it is up.

    Example: `keyart status --json`.
    """
    from dataclasses import asdict

    from keyart.stack import read_state

    info = read_state(load_settings().state_dir)
    if info is None:
        typer.echo("down")
        raise typer.Exit(1)
    shown = shown_url(info.redis_url)
    if as_json:
        typer.echo(json.dumps({**asdict(info), "redis_url": shown}))
    else:
        typer.echo(f"up: broker {info.kafka_bootstrap}, redis {shown}")


@app.command("settings")
def show_settings() -> None:
    """Print every setting, its environment variable and its current value.

    Secrets are not printed: a token shows as ``set (N chars)`` (empty when
    unset) and a URL's password as ``***``.

    Example: `KEYART_FLUSH_INTERVAL_MS=250 keyart settings`.
    """
    settings = settings_for_cli()
    for name, field in Settings.model_fields.items():
        value = shown_value(name, getattr(settings, name))
        typer.echo(f"KEYART_{name.upper():28} {value:32} {field.description or ''}")


def _register_all() -> None:
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name and module_name.startswith(error.name):
                continue  # that package has no commands yet
            raise
        module.register(app)


_register_all()


def run() -> None:
    """Entry point that turns a settings error into a clean exit."""
    try:
        app()
    except SettingsError as error:
        print(error, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    run()
