"""`keyart streams`: run one learner worker."""

from __future__ import annotations

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the `streams` command to the `keyart` CLI."""

    @app.command("streams")
    def streams(
        app_id: str = typer.Option(
            None,
            "--app-id",
            help="Consumer group / Faust app id (default KEYART_STREAMS_APP_ID).",
        ),
    ) -> None:
        """Run a streaming learner worker: impressions and clicks into Redis.

        Start as many as there are partitions to share; they split the
        partitions of one consumer group. Metrics, /healthz and /readyz are
        served on KEYART_METRICS_PORT (0: a free port, logged at start).

        Example: `KEYART_FLUSH_INTERVAL_MS=250 keyart streams`.
        """
        from streams.worker import run_worker

        overrides = {"streams_app_id": app_id} if app_id else {}
        from keyart.cli import settings_for_cli

        run_worker(settings_for_cli(**overrides))
