"""`keyart gateway`: serve the select API and the event collector."""

from __future__ import annotations

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the `gateway` subcommand to the `keyart` command."""

    @app.command("gateway")
    def gateway(
        host: str = typer.Option(
            None, help="Listen address (default: KEYART_GATEWAY_HOST)."
        ),
        port: int = typer.Option(None, help="Port (default: KEYART_GATEWAY_PORT)."),
        workers: int = typer.Option(
            1, min=1, max=64, help="Processes; each holds its own caches."
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
            "log_config": None,  # keyart configured logging already
        }
        if workers > 1:
            import os

            for key, value in settings.model_dump(mode="json").items():
                if value is not None:
                    os.environ[f"KEYART_{key.upper()}"] = str(value)
            uvicorn.run(
                "gateway.app:create_app", factory=True, workers=workers, **config
            )
            return
        from gateway.app import create_app

        uvicorn.run(create_app(settings), **config)
