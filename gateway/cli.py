"""`keyart gateway`: serve the select API and the event collector.

With ``--workers N`` above 1, uvicorn spawns N processes that each import
:func:`worker_app` afresh. The parent passes them everything through the
environment: the settings, the logging choice (``KEYART_LOG_LEVEL``,
``KEYART_LOG_JSON``) and ``PROMETHEUS_MULTIPROC_DIR``, the folder where every
worker writes its metrics so that ``/metrics`` can add them up.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["register", "worker_app"]

logger = logging.getLogger("gateway")

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


def register(app: typer.Typer) -> None:
    """Add the `gateway` subcommand to the `keyart` command."""

    @app.command("gateway")
    def gateway(
        ctx: typer.Context,
        host: str = typer.Option(
            None, help="Listen address (default: KEYART_GATEWAY_HOST)."
        ),
        port: int = typer.Option(None, help="Port (default: KEYART_GATEWAY_PORT)."),
        workers: int = typer.Option(
            1,
            min=1,
            max=64,
            help="Processes; each holds its own caches, /metrics adds up all.",
        ),
        access_log: bool = typer.Option(False, help="Log every request."),
    ) -> None:
        """Serve /v1/select, /v1/events, the admin API and /metrics.

        Example: `KEYART_TOKEN_SECRET=$(openssl rand -hex 32) keyart gateway
        --port 8000`, then open http://127.0.0.1:8000/docs.
        """
        import importlib.util

        import uvicorn
        from threadpoolctl import threadpool_limits

        from keyart.cli import settings_for_cli

        settings = settings_for_cli()
        # Rows are small matrices: BLAS threads would only contend with the
        # event loop for the cores.
        threadpool_limits(1)
        if not settings.token_secret and workers > 1:
            typer.secho(
                "KEYART_TOKEN_SECRET is empty: with several workers, a token "
                "issued by one would not verify in another; set it.",
                fg="red",
                err=True,
            )
            raise typer.Exit(2)
        has_uvloop = importlib.util.find_spec("uvloop") is not None
        has_httptools = importlib.util.find_spec("httptools") is not None
        config = {
            "host": host or settings.gateway_host,
            "port": port if port is not None else settings.gateway_port,
            "loop": "uvloop" if has_uvloop else "asyncio",
            "http": "httptools" if has_httptools else "h11",
            "access_log": access_log,
            "log_config": None,  # keyart configures logging, in every process
        }
        if workers > 1:
            for key, value in settings.model_dump(mode="json").items():
                if value is not None:
                    os.environ[f"KEYART_{key.upper()}"] = str(value)
            # The workers configure logging as `keyart --log-level ...` asked.
            chosen = ctx.find_root().params
            os.environ["KEYART_LOG_LEVEL"] = str(chosen.get("log_level", "INFO"))
            os.environ["KEYART_LOG_JSON"] = "1" if chosen.get("log_json") else "0"
            with _metrics_dir(workers) as path:
                os.environ[MULTIPROC_DIR] = path
                uvicorn.run(
                    "gateway.cli:worker_app", factory=True, workers=workers, **config
                )
            return
        from gateway.app import create_app

        uvicorn.run(create_app(settings), **config)


@contextmanager
def _metrics_dir(workers: int) -> Iterator[str]:
    """The folder the workers write their metrics to, for as long as they run.

    A ``PROMETHEUS_MULTIPROC_DIR`` set by the user is used as it is and kept.
    Otherwise a fresh private folder (mode 0700) is made and removed at exit,
    so no run adds in the counts of an earlier one. The folder must exist
    before the workers start: they open their files in it as they import
    prometheus_client's metrics.
    """
    import shutil
    import tempfile

    given = os.environ.get(MULTIPROC_DIR)
    made = None
    if given:
        if not os.path.isdir(given):
            typer.secho(
                f"{MULTIPROC_DIR}={given} is not a folder; create it or unset "
                "it (keyart gateway then makes a private one).",
                fg="red",
                err=True,
            )
            raise typer.Exit(2)
        stale = [name for name in os.listdir(given) if name.endswith(".db")]
        if stale:
            logger.warning(
                "%s=%s already holds %d metric files: their counts are added "
                "to this run's; empty it between runs",
                MULTIPROC_DIR,
                given,
                len(stale),
            )
        path = given
    else:
        path = made = tempfile.mkdtemp(prefix="keyart-gateway-metrics-")
    logger.info(
        "%d gateway workers write their metrics to %s; /metrics adds them up",
        workers,
        path,
        extra={"metrics_dir": path, "workers": workers},
    )
    try:
        yield path
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)


def worker_app() -> FastAPI:
    """The application of one worker process of `keyart gateway --workers N`.

    uvicorn calls it in each spawned worker, which runs none of the `keyart`
    command's start-up: so it configures logging here, as the command does,
    from ``KEYART_LOG_LEVEL`` and ``KEYART_LOG_JSON``, and has ``/metrics``
    answer for all workers from ``PROMETHEUS_MULTIPROC_DIR``.
    """
    import signal

    import click

    from gateway import metrics
    from gateway._orphan import follow_parent
    from gateway.app import create_app
    from keyart.cli import configure_logging

    as_json = click.BOOL.convert(os.environ.get("KEYART_LOG_JSON", "0"), None, None)
    configure_logging(os.environ.get("KEYART_LOG_LEVEL", "INFO"), as_json=as_json)
    path = os.environ[MULTIPROC_DIR]
    for pid in metrics.forget_dead_workers(path):
        logger.warning(
            "gateway worker %d ended without a shutdown; its gauges are dropped",
            pid,
            extra={"pid": pid},
        )
    logger.info(
        "gateway worker %d adds its metrics to %s",
        os.getpid(),
        path,
        extra={"pid": os.getpid(), "metrics_dir": path},
    )
    # A killed `keyart gateway` left its workers serving the port for good:
    # each stops as on SIGTERM (uvicorn's shutdown) once its parent is gone.
    follow_parent(
        os.getppid(),
        lambda: os.kill(os.getpid(), signal.SIGTERM),
        "gateway-parent",
    )
    return create_app(metrics_dir=path)
