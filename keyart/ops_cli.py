"""Operations commands: ``keyart lag`` and ``keyart topics``."""

from __future__ import annotations

import json
import signal
import threading
import time
from typing import Any

import typer

__all__ = ["register", "render_table"]

LAG_HELP = """Consumer lag per group, topic and partition: committed offset, log end,
lag in messages and in seconds (age of the oldest unprocessed event). A
committed offset past the log end (topic recreated or truncated) is shown in
red as "past end" with a negative lag.

\b
Examples:
  keyart lag                          # every group, as a table
  keyart lag -g keyart-learner --json
  keyart lag --watch 5                # refresh every 5 s until Ctrl-C
  keyart lag -t keyart. --serve --port 9308   # Prometheus exporter
"""


def _seconds(value: float | None) -> str:
    if value is None:
        return "?"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def render_table(rows: list[Any], bootstrap: str) -> Any:
    """A rich table of :class:`keyart.lag.PartitionLag` rows."""
    from rich.table import Table

    table = Table(title=f"consumer lag at {bootstrap}", title_justify="left")
    for name in ("group", "topic", "partition", "committed", "log end", "lag"):
        table.add_column(
            name, justify="left" if name in ("group", "topic") else "right"
        )
    table.add_column("oldest unprocessed", justify="right")
    for row in rows:
        late = row.lag_messages > 0 and (row.lag_seconds or 0) > 60
        style = "red" if late or row.past_log_end else None
        lag = str(row.lag_messages)
        if row.past_log_end:
            lag += " (past end)"
        table.add_row(
            row.group,
            row.topic,
            str(row.partition),
            "-" if row.committed is None else str(row.committed),
            str(row.log_end),
            lag,
            _seconds(row.lag_seconds),
            style=style,
        )
    if not rows:
        table.caption = "no consumer group has committed offsets on these topics"
    elif any(row.past_log_end for row in rows):
        table.caption = (
            "past end: the committed offset is beyond the log end (the topic was "
            "recreated or truncated); a consumer resuming there skips every record "
            "until the log grows past it. keyart streams resumes such partitions "
            "from the log start when it next gets them."
        )
    return table


def _as_json(rows: list[Any], bootstrap: str, measured_at: float) -> str:
    return json.dumps(
        {
            "bootstrap": bootstrap,
            "measured_at": round(measured_at, 3),
            "partitions": [row.as_dict() for row in rows],
        }
    )


def _wait_for_signal() -> None:
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()


def register(app: typer.Typer) -> None:
    """Add ``keyart lag`` and ``keyart topics`` to the command."""
    _register_topics(app)

    @app.command(
        "lag",
        help=LAG_HELP,
        # The list of `keyart --help` keeps the line breaks of ``help``.
        short_help="Consumer lag per group, topic and partition; a Prometheus "
        "exporter with --serve.",
    )
    def lag(
        group: list[str] = typer.Option(
            None, "--group", "-g", help="Consumer group to show (repeatable; all)."
        ),
        topic_prefix: list[str] = typer.Option(
            None, "--topic-prefix", "-t", help="Only topics starting with this."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        watch: float = typer.Option(
            0.0, "--watch", "-w", help="Refresh every N seconds (0: once).", min=0
        ),
        serve: bool = typer.Option(
            False, "--serve", help="Serve the figures as Prometheus gauges."
        ),
        port: int | None = typer.Option(
            None, "--port", help="Exporter port (default KEYART_METRICS_PORT)."
        ),
        timeout: float = typer.Option(
            10.0, "--timeout", help="Seconds to wait for the broker.", min=0.1
        ),
    ) -> None:
        from keyart.cli import settings_for_cli
        from keyart.lag import LagError, measure_lag

        settings = settings_for_cli()
        bootstrap = settings.kafka_bootstrap
        groups = list(group or ()) or None
        prefixes = tuple(topic_prefix or ())
        if serve:
            _serve(settings, bootstrap, groups, prefixes, timeout, port)
            return

        def measure(now: float) -> list[Any]:
            try:
                return measure_lag(bootstrap, groups, prefixes, timeout, now)
            except LagError as error:
                typer.secho(f"keyart lag: {error}", fg="red", err=True)
                raise typer.Exit(1) from None

        if not watch:
            now = time.time()
            rows = measure(now)
            if as_json:
                typer.echo(_as_json(rows, bootstrap, now))
            else:
                from rich.console import Console

                console = Console()
                if not console.is_terminal:
                    console = Console(width=200)  # piped: never cut ids short
                console.print(render_table(rows, bootstrap))
            return
        _watch(measure, bootstrap, watch, as_json)


def _register_topics(app: typer.Typer) -> None:
    @app.command("topics")
    def topics(
        wait: float = typer.Option(
            60.0, "--wait", help="Seconds to wait for the broker to answer.", min=0
        ),
    ) -> None:
        """Create keyart's topics that do not exist yet, with their partitions.

        Waits for the broker first, so it can run as an init step beside a
        starting Kafka (the `topics` service of docker-compose.yml).

        \b
        Examples:
          keyart topics
          KEYART_KAFKA_BOOTSTRAP=kafka:9092 KEYART_TOPIC_PARTITIONS=16 keyart topics
        """
        from keyart.cli import settings_for_cli
        from keyart.stack import create_topics
        from schemas.topics import topic_specs

        settings = settings_for_cli()
        deadline = time.monotonic() + wait
        told = False
        while True:
            try:
                created = create_topics(settings)
                break
            except Exception as error:  # StackError; KafkaException while it starts
                if not told and wait > 0:
                    typer.echo(
                        f"waiting up to {wait:g} s for the broker at "
                        f"{settings.kafka_bootstrap} (KEYART_KAFKA_BOOTSTRAP)",
                        err=True,
                    )
                    told = True
                if time.monotonic() >= deadline:
                    typer.secho(
                        f"keyart topics: broker at {settings.kafka_bootstrap} "
                        f"(KEYART_KAFKA_BOOTSTRAP) did not answer within {wait:g} s: "
                        f"{error}",
                        fg="red",
                        err=True,
                    )
                    raise typer.Exit(1) from None
                time.sleep(1.0)
        specs = topic_specs(settings.topic_prefix, settings.topic_partitions)
        for name, (partitions, schema) in sorted(specs.items()):
            state = "created" if name in created else "exists"
            typer.echo(f"{name:40} {partitions:4d} partitions  {schema:18} {state}")


def _watch(measure: Any, bootstrap: str, every: float, as_json: bool) -> None:
    """Refresh until Ctrl-C; JSON mode prints one object a line.

    On a terminal the table is redrawn in place. Piped or redirected, each
    report is printed below the last: rich's live display draws only when it
    stops, so a pipe would get one report at the end.
    """
    # Ctrl-C and SIGTERM both end the watch, also when the process was started
    # with SIGINT ignored (a background job of a non-interactive shell).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        if as_json:
            while True:
                now = time.time()
                typer.echo(_as_json(measure(now), bootstrap, now))
                time.sleep(every)
        from rich.console import Console, Group
        from rich.live import Live
        from rich.text import Text

        def view() -> Any:
            rows = measure(time.time())
            stamp = time.strftime("%H:%M:%S")
            return Group(
                render_table(rows, bootstrap),
                Text(f"{stamp}, every {every:g} s; Ctrl-C stops", style="dim"),
            )

        console = Console()
        if not console.is_terminal:
            console = Console(width=200)  # as a single report: ids in full
            while True:
                console.print(view())
                console.file.flush()
                time.sleep(every)
        with Live(view(), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(every)
                live.update(view(), refresh=True)
    except KeyboardInterrupt:
        return


def _serve(
    settings: Any,
    bootstrap: str,
    groups: list[str] | None,
    prefixes: tuple[str, ...],
    timeout: float,
    port: int | None,
) -> None:
    from prometheus_client import REGISTRY

    from keyart.health import HealthServer, check_broker
    from keyart.lag import LagCollector

    REGISTRY.register(LagCollector(bootstrap, groups, prefixes, timeout))
    server = HealthServer(
        {"broker": check_broker(bootstrap)},
        port=settings.metrics_port if port is None else port,
        name="lag-exporter",
    )
    try:
        server.start()
    except OSError as error:
        typer.secho(f"keyart lag --serve: {error}", fg="red", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"lag exporter: {server.url}/metrics (broker {bootstrap})")
    _wait_for_signal()
    server.stop()
