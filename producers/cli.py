"""Commands of the producers package: ``keyart demo``, ``simulate``, ``replay``."""

from __future__ import annotations

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the producers' subcommands to the ``keyart`` command."""

    @app.command("demo")
    def demo(
        short: bool = typer.Option(
            False, "--short", help="A quick run for CI (fewer rounds, less traffic)."
        ),
    ) -> None:
        """Run the whole loop on real input and print what arrived.

        Starts the local stack when none is up, streams the Open Bandit
        Dataset's real logged clicks through the broker into Redis, and prints
        the arms. Examples: ``keyart demo``, ``keyart demo --short``.
        """
        from rich.console import Console

        from keyart.cli import settings_for_cli
        from keyart.stack import StackError
        from producers.demo import run_demo

        console = Console()
        try:
            run_demo(settings_for_cli(), short=short, console=console)
        except StackError as error:
            console.print(f"[red]keyart demo: the local stack did not start: {error}")
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            console.print("[yellow]keyart demo: interrupted; everything stopped")
            raise typer.Exit(130) from None

    @app.command("replay")
    def replay(
        limit: int = typer.Option(
            0, "--limit", min=0, help="Replay only the first N rounds (0: all)."
        ),
    ) -> None:
        """Stream the Open Bandit Dataset's logged rounds to the event topics.

        Impression and click ids are deterministic, so replaying twice is
        deduplicated by the learner. Example: ``keyart replay --limit 2000``.
        """
        from rich.progress import track

        from keyart.cli import settings_for_cli
        from producers.events import EventProducer
        from producers.replay import load_obd, round_events

        settings = settings_for_cli()
        log = load_obd(limit=limit or None)
        producer = EventProducer(settings)
        sent = 0
        for item in track(log.rounds, description="streaming logged rounds"):
            for kind, record in round_events(item):
                producer.send(kind, record)
                sent += 1
        producer.flush()
        typer.echo(
            f"sent {sent} events ({log.clicks} clicks) from {len(log.rounds)} "
            f"rounds to {settings.topic('impressions')} and {settings.topic('clicks')}"
        )
