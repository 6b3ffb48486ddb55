"""`keyart posters`: make posters from video, and review them.

Commands::

    keyart posters worker            consume video-published events (a group)
    keyart posters run FILE          make one local video's (or photo's) posters
    keyart posters publish FILE      put a video on the videos topic for workers
    keyart posters migrate           bring the catalog database to the newest schema
    keyart posters review list       pending candidates, best first
    keyart posters review approve ID...
    keyart posters review reject ID... --reason TEXT
    keyart posters review bulk-approve [--video-id V] [--min-score S]
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from keyart.settings import shown_url

if TYPE_CHECKING:
    from workers.review import ReviewService

__all__ = ["register"]

LIST_LIMIT = 20
"""Candidates `review list` shows unless ``--limit`` says otherwise."""
LIST_MAX = 500

posters = typer.Typer(
    name="posters",
    help=(
        "Make poster candidates from video and review them."
        "\n\n\b\nExamples:\n"
        "  keyart posters run bikes.mp4 --kind trailer\n"
        "  keyart posters worker\n"
        "  keyart posters publish bikes.mp4 --kind trailer\n"
        "  keyart posters review list --video-id bikes"
    ),
    no_args_is_help=True,
)
review = typer.Typer(
    name="review",
    help=(
        "List, approve and reject candidates."
        "\n\n\b\nExamples:\n"
        "  keyart posters review list --json\n"
        "  keyart posters review approve ID --reviewer ana\n"
        "  keyart posters review bulk-approve --reviewer ana --min-score 0.7"
    ),
    no_args_is_help=True,
)
posters.add_typer(review, name="review")


def _service() -> ReviewService:
    from keyart.cli import settings_for_cli
    from workers.catalog import Catalog
    from workers.review import ReviewService

    settings = settings_for_cli()
    # The same wait as `keyart posters publish`: a person is waiting.
    return ReviewService(
        Catalog(settings.database_url), settings, publish_timeout_s=15.0
    )


@posters.command("worker")
def worker(
    max_messages: int = typer.Option(
        None, min=1, help="Stop after this many messages (default: run until Ctrl-C)."
    ),
) -> None:
    """Consume the videos topic in the poster workers' consumer group.

    Example: `KEYART_METRICS_PORT=9100 keyart posters worker` (start one per
    core; they share the topic's partitions). The catalog is migrated at
    start; /metrics, /healthz and /readyz are served on KEYART_METRICS_PORT.
    """
    import signal

    from keyart.cli import settings_for_cli
    from workers.worker import run_worker

    settings = settings_for_cli()
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        counts = run_worker(settings, stop=stop, max_messages=max_messages)
    except OSError as error:  # the metrics port is taken
        typer.secho(str(error), fg="red", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(counts))


def _video_event(
    path: str, video_id: str | None, kind: str, title: str | None
) -> dict[str, Any]:
    """The ``video_published`` event of a command line's file, or exit 2."""
    from workers.runner import video_event
    from workers.validate import check_video_event

    if kind not in ("trailer", "feature", "episode", "other"):
        typer.secho(f"--kind: unknown kind {kind!r}", fg="red", err=True)
        raise typer.Exit(2)
    event = video_event(
        path, video_id, kind=kind, **({"title": title} if title else {})
    )
    problem = check_video_event(event)
    if problem is not None:
        hint = "" if video_id else " (choose one with --video-id)"
        typer.secho(problem + hint, fg="red", err=True)
        raise typer.Exit(2)
    return event


@posters.command("run")
def run(
    path: str = typer.Argument(..., help="A local video (or photo) file."),
    video_id: str = typer.Option(None, help="Video id (default: the file name)."),
    kind: str = typer.Option(
        "other", help="trailer, feature, episode or other (sets the sampling)."
    ),
    title: str = typer.Option(None, help="Title stored with the video."),
) -> None:
    """Make the posters of one local file, without Kafka, into the catalog.

    Example: `keyart posters run trailer.mp4 --kind trailer`; then
    `keyart posters review list`.
    """
    from tqdm import tqdm

    from keyart.cli import settings_for_cli
    from workers.runner import JobRunner

    event = _video_event(path, video_id, kind, title)
    settings = settings_for_cli()
    bar = tqdm(unit="frame", desc=event["video_id"], leave=True)

    def on_start(total: int) -> None:
        bar.reset(total=total)

    outcome = JobRunner(settings).run(
        event, worker="cli", progress=bar.update, on_start=on_start
    )
    bar.close()
    if outcome.status != "done":
        typer.secho(
            f"job {outcome.job_id} {outcome.status}: {outcome.reason}",
            fg="red",
            err=True,
        )
        raise typer.Exit(1)
    typer.echo(
        f"job {outcome.job_id}: {len(outcome.rows)} candidates pending review "
        f"in {shown_url(settings.database_url)}, images in {settings.poster_store}"
    )


@posters.command("publish")
def publish(
    path: str = typer.Argument(..., help="A video file the workers can read."),
    video_id: str = typer.Option(None, help="Video id (default: the file name)."),
    kind: str = typer.Option(
        "other", help="trailer, feature, episode or other (sets the sampling)."
    ),
    title: str = typer.Option(None, help="Title stored with the video."),
) -> None:
    """Put a video on the videos topic, for `keyart posters worker` to take.

    The event names the file by its absolute path, so the workers must see
    the same file system. Example: `keyart posters publish trailer.mp4
    --video-id trailer-1 --kind trailer`.
    """
    from keyart.cli import settings_for_cli
    from producers.events import EventProducer, ProduceError

    if not Path(path).is_file():
        typer.secho(f"{path}: no such file", fg="red", err=True)
        raise typer.Exit(2)
    event = _video_event(path, video_id, kind, title)
    settings = settings_for_cli()
    # log_level 2: no librdkafka line per connection retry; a failure is
    # reported below with the broker's address.
    producer = EventProducer(settings, config={"log_level": 2})
    producer.send("video_published", event)
    try:
        producer.flush(timeout=15)
    except ProduceError as error:
        typer.secho(
            f"not published: {error} (is the broker at "
            f"{settings.kafka_bootstrap} up? KEYART_KAFKA_BOOTSTRAP)",
            fg="red",
            err=True,
        )
        raise typer.Exit(1) from None
    typer.echo(
        f"published video {event['video_id']} ({event['uri']}) to "
        f"{settings.topic('videos')} as event {event['event_id']}"
    )


@posters.command("migrate")
def migrate(
    revision: str = typer.Option("head", help="Alembic revision to upgrade to."),
) -> None:
    """Bring the catalog database (KEYART_DATABASE_URL) to the newest schema.

    Example: `KEYART_DATABASE_URL=postgresql+psycopg://u@db/keyart
    keyart posters migrate`.
    """
    from keyart.cli import settings_for_cli
    from workers.catalog import make_engine, upgrade

    settings = settings_for_cli()
    engine = make_engine(settings.database_url)
    upgrade(engine, revision)
    engine.dispose()
    typer.echo(f"catalog at {revision}: {shown_url(settings.database_url)}")


@review.command("list")
def review_list(
    video_id: str = typer.Option(None, help="Only this video's candidates."),
    status: str = typer.Option(
        "pending_review", help="pending_review, approved, rejected."
    ),
    limit: int = typer.Option(
        LIST_LIMIT, min=1, max=LIST_MAX, help="How many to show."
    ),
    offset: int = typer.Option(0, min=0, help="Skip the first N (best score first)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON with features."),
) -> None:
    """List candidates, best score first.

    Examples: `keyart posters review list --video-id bikes --json`,
    `keyart posters review list --limit 20 --offset 20` (the next 20).
    """
    items, total = _service().list_candidates(status, video_id, None, limit, offset)
    if as_json:
        typer.echo(json.dumps({"total": total, "candidates": items}, indent=1))
        return
    typer.echo(_listed(status, total, offset, len(items)))
    for item in items:
        typer.echo(
            f"{item['poster_id']}  {item['video_id']:<16} {item['aspect']:>5} "
            f"{item['width']}x{item['height']:<5} score {item['score']:.3f}  "
            f"{','.join(item['tags'])}  {item['thumbnail_url']}"
        )


def _listed(status: str, total: int, offset: int, shown: int) -> str:
    """The first line of `review list`: how many candidates there are, which
    of them are shown, and the options that show the others."""
    header = f"{total} {status} candidates"
    if offset == 0 and shown == total:
        return header
    if not shown:
        return f"{header}; none past --offset {offset}"
    last = offset + shown
    header += f", showing {offset + 1}-{last} (best score first)"
    if last < total:
        header += f"; see more with --offset {last} or --limit (at most {LIST_MAX})"
    return header


def _decide(
    action: str,
    poster_ids: list[str],
    reviewer: str,
    reason: str,
    placements: list[str] | None = None,
) -> None:
    from workers.review import ReviewError

    service = _service()
    try:
        if action == "approve":
            done = service.approve(poster_ids, reviewer, reason, placements or [])
        else:
            done = service.reject(poster_ids, reviewer, reason)
    except ReviewError as error:
        typer.secho(str(error), fg="red", err=True)
        raise typer.Exit(1) from None
    verb = {"approve": "approved", "reject": "rejected"}[action]
    typer.echo(f"{verb} {len(done)}: {' '.join(c['poster_id'] for c in done)}")


@review.command("approve")
def review_approve(
    poster_ids: list[str] = typer.Argument(..., help="Poster ids to approve."),
    reviewer: str = typer.Option(..., help="Who approves."),
    reason: str = typer.Option("", help="Why (optional)."),
    placement: list[str] = typer.Option(
        None, help="Only in this placement (repeat; default: all of its aspect)."
    ),
) -> None:
    """Approve candidates: each is published as an arm of its video.

    Example: `keyart posters review approve 3f2a9c... --reviewer ana
    --placement home_row`.
    """
    _decide("approve", poster_ids, reviewer, reason, placement)


@review.command("reject")
def review_reject(
    poster_ids: list[str] = typer.Argument(..., help="Poster ids to reject."),
    reviewer: str = typer.Option(..., help="Who rejects."),
    reason: str = typer.Option(..., help="Why (required)."),
) -> None:
    """Reject candidates; nothing is published.

    Example: `keyart posters review reject 3f2a9c... --reviewer ana --reason blurry`.
    """
    _decide("reject", poster_ids, reviewer, reason)


@review.command("bulk-approve")
def review_bulk_approve(
    reviewer: str = typer.Option(..., help="Who approves."),
    reason: str = typer.Option("", help="Why (optional)."),
    video_id: str = typer.Option(None, help="Only this video's candidates."),
    min_score: float = typer.Option(
        None, help="Only candidates scoring at least this."
    ),
    limit: int = typer.Option(100, min=1, max=1000, help="At most this many."),
) -> None:
    """Approve the best pending candidates matching the filters.

    Example: `keyart posters review bulk-approve --reviewer ana --min-score 0.7`.
    """
    from workers.review import ReviewError

    try:
        done = _service().bulk_approve(reviewer, reason, video_id, min_score, limit)
    except ReviewError as error:
        typer.secho(str(error), fg="red", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"approved {len(done)}")


def register(app: typer.Typer) -> None:
    """Add the `posters` command group to the `keyart` command."""
    app.add_typer(posters, name="posters")
