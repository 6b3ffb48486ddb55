"""``keyart demo``: the whole loop on real input, ending with evidence.

Steps of :func:`run_demo`:

1. use the local stack that ``keyart up`` left running, or start one on free
   ports; give this run its own topic and Redis key prefix;
2. start the learner (``keyart streams``) and the gateway (``keyart gateway``)
   as child processes, and set the experiment split: uniform random control,
   sliding-window Thompson sampling, LinUCB and the factorization machine;
3. make posters from the real test videos with the poster worker
   (``keyart posters worker``), with automatic approval on; the learner turns
   the approved posters into arms in Redis;
4. run simulated MovieLens users through the gateway for ``demo_seconds``
   while sampling the learner's consumer lag;
5. stream the Open Bandit Dataset's real logged clicks through the broker and
   learner, and replay the four policies on it offline;
6. read the events back from Kafka, check them against the learner's state
   in Redis, print the table and write the HTML report.

Every child process is stopped at the end, also on Ctrl-C or an error, and a
stack started here is stopped too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from keyart.settings import Settings, load_settings, shown_url
from producers.processes import ProcessGroup, sigterm_as_interrupt

__all__ = ["DEMO_VIDEOS", "DemoOptions", "child_env", "local_stack", "run_demo"]

logger = logging.getLogger("producers")

DEMO_VIDEOS = {"bikes": "bikes.mp4", "bigbuckbunny": "bigbuckbunny.mp4"}
PLACEMENT = "home_row"
VARIANTS = (
    ("control", "random"),
    ("ts", "thompson"),
    ("linucb", "linucb"),
    ("fm", "fm"),
)
DRIFT_VARIANT = ("ts_alltime", "thompson_alltime")


@dataclass
class DemoOptions:
    """How one demo run goes; every field is logged in the report."""

    seconds: float = 180.0
    short: bool = False
    drift: bool = False
    seed: int = 7
    out_dir: Path = Path("var/demo")
    auto_approve_score: float = 0.5
    auto_approve_top: int | None = 6
    """Posters approved per video and aspect ratio: the best scoring, as a
    reviewer would keep a short list (a short list is also learnt sooner)."""
    attribution_window_s: float = 60.0
    window_s: float | None = None
    """Sliding window of Thompson sampling (default: the whole run, or a sixth
    of it with drift, so the window forgets what it learnt before the drift
    while the all-time counts still hold three times as much)."""
    concurrency: int = 6
    rate: float | None = 50.0
    """Sessions started a second: on 2 cores, faster traffic makes the gateway
    miss its Redis budget and serve fallbacks (about 9% of rows at 100/s)."""
    obd_rounds: int | None = None
    keys_ttl_s: int = 86_400
    """The run's Redis keys expire this long after it ends (0 keeps them): each
    run has its own prefix, and a shared Redis would otherwise keep them all."""
    run_id: str = field(default_factory=lambda: time.strftime("%Y%m%d%H%M%S"))

    def __post_init__(self) -> None:
        if self.window_s is None:
            self.window_s = max(20.0, self.seconds / 6) if self.drift else self.seconds

    @property
    def variants(self) -> list[tuple[str, str]]:
        return [*VARIANTS, DRIFT_VARIANT] if self.drift else list(VARIANTS)


@contextlib.contextmanager
def local_stack(settings: Settings, console: Console) -> Iterator[Settings]:
    """Settings pointed at a running local stack, started here when none is up.

    A stack started here is stopped on the way out, also on Ctrl-C or an error.
    """
    from keyart.stack import LocalStack, read_state

    running = read_state(settings.state_dir)
    if running is not None:
        console.print(f"using the local stack that is up: {running.kafka_bootstrap}")
        yield _with(
            settings,
            kafka_bootstrap=running.kafka_bootstrap,
            redis_url=running.redis_url,
        )
        return
    stack = LocalStack(settings, die_with_parent=True)
    with console.status("starting the local broker and Redis"):
        info = stack.start()
    console.print(
        f"local stack up: broker {info.kafka_bootstrap}, {shown_url(info.redis_url)}"
    )
    try:
        yield _with(
            settings, kafka_bootstrap=info.kafka_bootstrap, redis_url=info.redis_url
        )
    finally:
        stack.stop()
        console.print("local stack stopped")


def _with(settings: Settings, **changes: Any) -> Settings:
    return load_settings(**{**settings.model_dump(), **changes})


def run_settings(settings: Settings, options: DemoOptions) -> Settings:
    """The settings every process of this run shares (its own prefixes)."""
    from keyart.stack import free_port

    prefix = f"demo{options.run_id}"
    out = options.out_dir.resolve()
    return _with(
        settings,
        topic_prefix=prefix,
        redis_prefix=prefix,
        streams_app_id=f"keyart-learner-{prefix}",
        database_url=f"sqlite:///{out / 'catalog.db'}",
        poster_store=out / "posters",
        auto_approve_score=options.auto_approve_score,
        auto_approve_top=options.auto_approve_top,
        attribution_window_s=options.attribution_window_s,
        window_kind="time",
        window_s=options.window_s or max(60.0, options.seconds),
        window_buckets=12,
        # The demo's traffic is a few thousand impressions: the FM learns from
        # all of them (a 5% sample leaves it a few dozen clicks to learn from).
        fm_sample_rate=1.0,
        gateway_port=free_port(0),
        token_secret=secrets.token_hex(32),
        admin_token=secrets.token_hex(16),
        metrics_port=0,
        seed=options.seed,
        data_cache=Path(settings.data_cache).resolve(),
    )


def child_env(settings: Settings) -> dict[str, str]:
    """Environment that gives a child process exactly these settings."""
    return {
        f"KEYART_{name.upper()}": str(value)
        for name, value in settings.model_dump(mode="json").items()
        if value is not None
    }


def run_demo(
    settings: Settings,
    options: DemoOptions,
    console: Console | None = None,
    *,
    start_stack: bool = True,
) -> dict[str, Any]:
    """Run the demo end to end (see the module's steps); return the summary.

    With ``start_stack=False`` the settings must already point at a running
    broker and Redis (the tests' stack).
    """
    from producers import demo_steps as steps
    from producers.demo_posters import make_posters

    console = console or Console()
    started = time.monotonic()
    out = options.out_dir
    if out.exists():
        for name in ("catalog.db", "catalog.json", "posters", "logs"):
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    stack = local_stack(settings, console) if start_stack else _given(settings)
    with sigterm_as_interrupt(), stack as live:
        run = run_settings(live, options)  # Step 1
        env = child_env(run)
        from keyart.stack import create_topics

        create_topics(run)
        console.print(
            f"run {options.run_id}: topics {run.topic_prefix}.*, Redis keys "
            f"{run.redis_prefix}:*, output in {out}"
        )
        with ProcessGroup(out / "logs") as group:
            base_url = steps.start_services(group, run, env, console)  # Step 2
            steps.configure_gateway(base_url, run, options, console)
            catalog = make_posters(group, run, env, options, console)  # Step 3
            # What bench/sim_policies.py needs to replay this catalog offline.
            (out / "catalog.json").write_bytes(catalog.to_json())
            traffic, lag = steps.simulate(  # Step 4
                group, run, catalog, base_url, options, console
            )
            replay = steps.replay_obd(group, run, options, console)  # Step 5
            steps.wait_caught_up(run, console, group=group)
            summary = steps.report(  # Step 6
                run, options, catalog, traffic, lag, replay, console
            )
            summary["restarts"] = {
                name: child.restarts_done for name, child in group.children.items()
            }
            if any(summary["restarts"].values()):
                console.print(f"[yellow]processes started again: {summary['restarts']}")
            (out / "summary.json").write_text(
                json.dumps(summary, indent=2, default=str)
            )
        if options.keys_ttl_s > 0:  # every child has stopped writing
            count = expire_run_keys(run, options.keys_ttl_s)
            console.print(
                f"{count} Redis keys {run.redis_prefix}:* expire in "
                f"{options.keys_ttl_s / 3600:g} h (the report keeps the results)"
            )
    summary["seconds"] = round(time.monotonic() - started, 1)
    console.print(f"demo finished in {summary['seconds']:.0f} s")
    return summary


def expire_run_keys(settings: Settings, ttl_s: int) -> int:
    """Give every Redis key under the run's prefix a time to live; return how many.

    The run's prefix is ``demo<timestamp>``, so it holds no glob characters.
    """
    import redis

    client = redis.Redis.from_url(settings.redis_url)
    count = 0
    try:
        pipe = client.pipeline(transaction=False)
        for key in client.scan_iter(match=f"{settings.redis_prefix}:*", count=1000):
            pipe.expire(key, ttl_s)
            count += 1
            if len(pipe) >= 1000:
                pipe.execute()
        pipe.execute()
    finally:
        client.close()
    return count


@contextlib.contextmanager
def _given(settings: Settings) -> Iterator[Settings]:
    yield settings
