"""Commands of the producers package: ``keyart demo``, ``simulate``, ``replay``."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the producers' subcommands to the ``keyart`` command."""

    @app.command("demo")
    def demo(
        short: bool = typer.Option(
            False, "--short", help="A quick run for CI (40 s of traffic, 3,000 rounds)."
        ),
        seconds: float = typer.Option(
            None, help="Seconds of simulated traffic (default: KEYART_DEMO_SECONDS)."
        ),
        drift: bool = typer.Option(
            False,
            "--drift",
            help="Each video's best poster loses appeal half-way; adds an "
            "all-time Thompson variant to compare with the sliding window.",
        ),
        out: Path = typer.Option(Path("var/demo"), help="Folder of the report."),
    ) -> None:
        """Run the whole loop on real input and report each policy's lift.

        Starts the local stack when none is up, makes posters from two real
        videos, runs simulated MovieLens users through the gateway with an
        experiment split, replays the Open Bandit Dataset's real clicks, and
        ends with a table and an HTML report. Examples: ``keyart demo``,
        ``keyart demo --short``, ``KEYART_DEMO_SECONDS=300 keyart demo --drift``.
        """
        import logging

        from rich.console import Console

        from keyart.cli import settings_for_cli
        from keyart.stack import StackError
        from producers.demo import DemoOptions, run_demo
        from producers.processes import ChildFailed

        # One line per HTTP request would bury the progress bars.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        settings = settings_for_cli()
        options = DemoOptions(
            seconds=seconds or (40.0 if short else settings.demo_seconds),
            short=short,
            drift=drift,
            seed=settings.seed,
            out_dir=out,
            obd_rounds=3000 if short else None,
        )
        console = Console(width=max(Console().width, 132))
        try:
            run_demo(settings, options, console)
        except (StackError, ChildFailed) as error:
            console.print(f"[red]keyart demo failed: {error}")
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            console.print("[yellow]keyart demo: interrupted; every process stopped")
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
