"""Commands of the producers package: `keyart demo`, `simulate`, `replay`."""

from __future__ import annotations

import time
from pathlib import Path

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add the producers' subcommands to the `keyart` command."""

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
        keep: bool = typer.Option(
            False,
            "--keep",
            help="Keep the run's Redis keys (by default they expire after 24 h).",
        ),
    ) -> None:
        """Run the whole loop on real input and report each policy's lift.

        Starts the local stack when none is up, makes posters from two real
        videos, runs simulated MovieLens users through the gateway with an
        experiment split, replays the Open Bandit Dataset's real clicks, and
        ends with a table and an HTML report. Examples: `keyart demo`,
        `keyart demo --short`, `KEYART_DEMO_SECONDS=300 keyart demo --drift`.
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
            keys_ttl_s=0 if keep else 86_400,
        )
        console = Console(width=max(Console().width, 150))
        try:
            run_demo(settings, options, console)
        except (StackError, ChildFailed) as error:
            console.print(f"[red]keyart demo failed: {error}")
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            console.print("[yellow]keyart demo: interrupted; every process stopped")
            raise typer.Exit(130) from None

    @app.command("simulate")
    def simulate(
        gateway: str = typer.Option(
            "http://127.0.0.1:8000", help="Base URL of a running gateway."
        ),
        video: list[str] = typer.Option(
            ..., "--video", "-v", help="A video of the row (repeat for more)."
        ),
        placement: str = typer.Option("home_row", help="Placement of the row."),
        seconds: float = typer.Option(60.0, min=1, help="How long sessions start."),
        rate: float = typer.Option(50.0, min=0.1, help="Most sessions a second."),
        concurrency: int = typer.Option(6, min=1, help="Sessions in flight."),
        drift: bool = typer.Option(
            False, help="Each video's best poster loses appeal half-way."
        ),
    ) -> None:
        """Send simulated MovieLens users through a running gateway.

        The posters and their features are read from Redis; clicks follow the
        synthetic click model (seeded by KEYART_SEED, parameters printed).
        Example: `keyart simulate --video bikes --video bigbuckbunny
        --seconds 120 --gateway http://127.0.0.1:8000`.
        """
        import asyncio
        import logging

        from rich.progress import Progress

        from keyart.cli import settings_for_cli
        from keyart.data import fetch
        from producers.demo_posters import read_catalog
        from producers.simulator import (
            ClickModel,
            ClickParams,
            Oracle,
            TrafficSimulator,
        )
        from producers.traffic import TrafficRunner
        from producers.users import load_users

        logging.getLogger("httpx").setLevel(logging.WARNING)
        settings = settings_for_cli()
        catalog = read_catalog(settings, video, placement)
        missing = [v for v in video if not catalog.video_to_posters.get(v)]
        if missing:
            typer.secho(
                f"--video: no approved {placement} posters in Redis "
                f"(KEYART_REDIS_URL, KEYART_REDIS_PREFIX) for {', '.join(missing)}",
                fg="red",
                err=True,
            )
            raise typer.Exit(2)
        users = load_users(fetch("ml100k_users.parquet.brotli", settings.data_cache))
        params = ClickParams(
            seed=settings.seed, drift_at_s=seconds / 2 if drift else None
        )
        model = ClickModel(
            catalog.poster_to_features, params, catalog.poster_to_video, users
        )
        typer.echo(f"synthetic click model: {params.as_dict()}")
        with Progress() as progress:
            task = progress.add_task("simulated traffic", total=seconds)
            runner = TrafficRunner(
                gateway,
                TrafficSimulator(users, model),
                Oracle(model),
                catalog.video_to_posters,
                placement=placement,
                duration_s=seconds,
                concurrency=concurrency,
                rate=rate,
                run_id=f"sim{settings.seed}-{int(time.time())}",
                on_progress=lambda t, r: progress.update(task, completed=t),
            )
            result = asyncio.run(runner.run())
        typer.echo(
            f"{result.requests} rows, {len(result.shown)} impressions, "
            f"{result.clicks_sent} clicks, {result.duplicates_sent} duplicates, "
            f"{result.select_errors} failed requests, "
            f"{len(result.event_errors)} refused events"
        )
        variants = sorted({s.variant for s in result.shown})
        for name in variants:
            mine = [s for s in result.shown if s.variant == name]
            expected = sum(s.expected_ctr for s in mine) / len(mine)
            regret = sum(s.regret for s in mine)
            typer.echo(
                f"  {name:12} {len(mine):6} impressions, oracle CTR of shown "
                f"{100 * expected:.2f}%, regret {regret:.1f} clicks"
            )

    @app.command("replay")
    def replay(
        limit: int = typer.Option(
            0, "--limit", min=0, help="Replay only the first N rounds (0: all)."
        ),
        logged_time: bool = typer.Option(
            False,
            "--logged-time",
            help="Keep the log's 2019 event times (default: replay time, 1 ms "
            "apart, which the learner's event-time attribution expects).",
        ),
    ) -> None:
        """Stream the Open Bandit Dataset's logged rounds to the event topics.

        Impression and click ids are deterministic, so replaying twice is
        deduplicated by the learner. Example: `keyart replay --limit 2000`.
        """
        from rich.progress import Progress

        from keyart.cli import settings_for_cli
        from producers.replay import load_obd, stream_log

        settings = settings_for_cli()
        log = load_obd(limit=limit or None)
        with Progress() as progress:
            task = progress.add_task("streaming logged rounds", total=len(log.rounds))
            impressions, clicks = stream_log(
                settings,
                log.rounds,
                lambda n: progress.update(task, completed=n),
                start_ms=None if logged_time else int(time.time() * 1000),
            )
        typer.echo(
            f"sent {impressions} impressions and {clicks} clicks from "
            f"{len(log.rounds)} rounds to {settings.topic('impressions')} and "
            f"{settings.topic('clicks')}"
        )
