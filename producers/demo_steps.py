"""The steps of ``keyart demo`` (see :mod:`producers.demo` for their order)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from gateway.config import MAX_COUNT
from keyart.settings import Settings
from producers.demo import PLACEMENT, DemoOptions
from producers.demo_posters import Catalog
from producers.processes import ChildFailed, ProcessGroup, keyart_argv

__all__ = [
    "LagSampler",
    "configure_gateway",
    "replay_obd",
    "report",
    "simulate",
    "start_services",
    "wait_caught_up",
]

logger = logging.getLogger("producers")


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
    )


def start_services(
    group: ProcessGroup, run: Settings, env: dict[str, str], console: Console
) -> str:
    """Start the learner and the gateway; return the gateway's base URL."""
    import httpx

    # The learner stops on purpose when it loses Redis or the broker and
    # expects to be started again (from its last flush), as a supervisor would.
    group.start("streams", keyart_argv("streams"), env, restarts=2)
    group.start("gateway", keyart_argv("gateway"), env, restarts=2)
    base_url = f"http://{run.gateway_host}:{run.gateway_port}"
    deadline = time.monotonic() + 90
    with console.status("starting the learner (keyart streams) and the gateway"):
        while True:
            group.check_alive("streams", "gateway")
            try:
                if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise ChildFailed(f"the gateway at {base_url} did not answer in 90 s")
            time.sleep(0.3)
    console.print(f"learner started; gateway answers at {base_url}")
    return base_url


def configure_gateway(
    base_url: str, run: Settings, options: DemoOptions, console: Console
) -> None:
    """Set the experiment split and the rules through the admin API.

    The rules that would blur a comparison of policies in a few minutes of
    traffic are set neutral: the exposure cap, the deweighting of posters a
    user has seen, row diversity, and retirement (a retired poster leaves
    every variant, the random control too, which would make random better as
    the run goes on). The ramp-up share for new posters stays at its default.
    """
    import httpx

    headers = {"Authorization": f"Bearer {run.admin_token}"}
    weight = round(1.0 / len(options.variants), 4)
    experiments = {
        "salt": f"demo-{options.run_id}",
        "variants": [
            {"name": name, "policy": policy, "weight": weight}
            for name, policy in options.variants
        ],
    }
    rules = {
        "exposure_cap_share": 1.0,
        "deweight_factor": 1.0,
        "mmr_lambda": 0.0,
        "retire_min_impressions": MAX_COUNT,
    }
    for path, document in (
        ("/admin/experiments", experiments),
        ("/admin/rules", {"default": rules}),
    ):
        response = httpx.put(
            f"{base_url}{path}",
            json={"expected_version": None, "document": document},
            headers=headers,
            timeout=10,
        )
        if response.status_code != 200:
            raise ChildFailed(
                f"PUT {path} answered {response.status_code}: {response.text}"
            )
    split = ", ".join(f"{n} ({p})" for n, p in options.variants)
    console.print(f"experiment split, equal shares by user: {split}")
    console.print(f"rules set neutral for the comparison: {rules}")


class LagSampler(threading.Thread):
    """Sample the learner's consumer lag every ``every_s`` seconds."""

    def __init__(self, run: Settings, every_s: float = 2.0) -> None:
        super().__init__(name="lag-sampler", daemon=True)
        self.run_settings = run
        self.every_s = every_s
        self.samples: list[tuple[float, int, float]] = []
        self._stop_event = threading.Event()
        self._start_time = time.monotonic()

    def measure(self) -> tuple[int, float]:
        from keyart.lag import measure_lag

        s = self.run_settings
        topics = (s.topic("impressions"), s.topic("clicks"))
        rows = measure_lag(
            s.kafka_bootstrap, [s.streams_app_id], [s.topic_prefix], timeout=5
        )
        rows = [r for r in rows if r.topic in topics]
        messages = sum(r.lag_messages for r in rows)
        seconds = max((r.lag_seconds or 0.0 for r in rows), default=0.0)
        return messages, seconds

    def run(self) -> None:
        while not self._stop_event.wait(self.every_s):
            try:
                messages, seconds = self.measure()
            except Exception as error:  # the broker is busy: skip this sample
                logger.debug("lag sample failed: %r", error)
                continue
            self.samples.append(
                (time.monotonic() - self._start_time, messages, seconds)
            )

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)


def simulate(
    group: ProcessGroup,
    run: Settings,
    catalog: Catalog,
    base_url: str,
    options: DemoOptions,
    console: Console,
) -> tuple[Any, LagSampler]:
    """Run simulated users through the gateway for ``options.seconds``."""
    import asyncio

    from keyart.data import fetch
    from producers.simulator import ClickModel, ClickParams, Oracle, TrafficSimulator
    from producers.traffic import TrafficRunner
    from producers.users import load_users

    users = load_users(fetch("ml100k_users.parquet.brotli", run.data_cache))
    params = ClickParams(
        seed=options.seed,
        drift_at_s=options.seconds / 2 if options.drift else None,
    )
    model = ClickModel(
        catalog.poster_to_features, params, catalog.poster_to_video, users
    )
    simulator = TrafficSimulator(users, model)
    headroom = {
        video: Oracle(model).headroom(users, posters)
        for video, posters in catalog.video_to_posters.items()
    }
    logger.debug("click model parameters: %s", params.as_dict())
    console.print(f"synthetic click model (seeded, logged): {params.as_dict()}")
    for video, room in headroom.items():
        console.print(
            f"{video}: mean CTR of a random poster {100 * room['random']:.1f}%, "
            f"of the best single poster {100 * room['best_single']:.1f}%, of each "
            f"user's own best {100 * room['per_user_best']:.1f}% (the oracle)"
        )
    sampler = LagSampler(run)
    sampler.start()
    with _progress(console) as progress:
        task = progress.add_task(
            "simulated traffic through the gateway",
            total=options.seconds,
            status="",
        )

        def on_progress(elapsed: float, result: Any) -> None:
            group.check_alive("streams", "gateway")
            lag = sampler.samples[-1][1] if sampler.samples else 0
            progress.update(
                task,
                completed=min(elapsed, options.seconds),
                status=f"{len(result.shown)} impressions, {result.clicks_sent} "
                f"clicks, learner lag {lag}",
            )

        runner = TrafficRunner(
            base_url,
            simulator,
            Oracle(model),
            catalog.video_to_posters,
            placement=PLACEMENT,
            duration_s=options.seconds,
            concurrency=options.concurrency,
            rate=options.rate,
            run_id=options.run_id,
            on_progress=on_progress,
        )
        try:
            result = asyncio.run(runner.run())
        except BaseException:
            sampler.stop()
            raise
    result.params = params  # type: ignore[attr-defined]
    result.headroom = headroom  # type: ignore[attr-defined]
    console.print(
        f"{result.requests} rows requested, {len(result.shown)} impressions, "
        f"{result.clicks_sent} clicks sent ({result.clicks_after_run} clicks still "
        f"pending at the end were never sent), {result.duplicates_sent} duplicate "
        f"deliveries, {result.select_errors} failed requests"
    )
    return result, sampler


def publish_obd_items(
    run: Settings, items: dict[int, dict[str, float]], run_id: str
) -> None:
    """Publish the Open Bandit items as the approved posters (arms) of one slot."""
    from producers.events import EventProducer
    from producers.replay import OBD_VIDEO, poster_of_item

    producer = EventProducer(run)
    for item, features in sorted(items.items()):
        producer.send(
            "poster_published",
            {
                "event_id": f"{run_id}-obd-item-{item}",
                "event_time": int(time.time() * 1000),
                "video_id": OBD_VIDEO,
                "poster_id": poster_of_item(item),
                "image_url": "",
                "aspect": "1:1",
                "features": features,
                "reviewer": "open-bandit-dataset",
            },
        )
    producer.flush()


def replay_obd(
    group: ProcessGroup, run: Settings, options: DemoOptions, console: Console
) -> dict[str, Any]:
    """Stream the Open Bandit log through the learner and replay the policies."""
    from keyart.data import fetch
    from producers.replay import (
        OBD_ASSET,
        OBD_ITEMS_ASSET,
        load_item_features,
        load_obd,
        stream_log,
    )
    from producers.replay_policies import demo_policies, replay

    log = load_obd(fetch(OBD_ASSET, run.data_cache), limit=options.obd_rounds)
    items = load_item_features(fetch(OBD_ITEMS_ASSET, run.data_cache))
    publish_obd_items(run, items, options.run_id)
    with _progress(console) as progress:
        task = progress.add_task(
            "Open Bandit rounds through the broker",
            total=len(log.rounds),
            status=f"{len(log.rounds):,} rounds",
        )
        sent_impressions, sent_clicks = stream_log(
            run,
            log.rounds,
            lambda n: progress.update(task, completed=n),
            start_ms=int(time.time() * 1000),
        )
        results = []
        policies = demo_policies(log, items, options.seed)
        task = progress.add_task(
            "replaying the policies on the log",
            total=len(policies),
            status=f"{len(policies)} policies",
        )
        for policy in policies:
            group.check_alive("streams", "gateway")
            progress.update(task, status=policy.name)
            results.append(replay(log, policy))
            progress.advance(task)
    console.print(
        f"Open Bandit Dataset: {len(log.rounds)} logged rounds with {log.clicks} "
        f"real clicks streamed ({sent_impressions} impressions, {sent_clicks} clicks)"
    )
    return {"log": log, "results": results}


def wait_caught_up(
    run: Settings,
    console: Console,
    timeout: float = 120.0,
    group: ProcessGroup | None = None,
) -> None:
    """Wait until the learner has read every impression and click and flushed."""
    sampler = LagSampler(run)
    deadline = time.monotonic() + timeout
    messages = -1
    with console.status("waiting for the learner to catch up"):
        while time.monotonic() < deadline:
            if group is not None:
                group.check_alive("streams")
            try:
                messages, _ = sampler.measure()
            except Exception as error:  # a slow broker answer: ask again
                logger.debug("lag check failed: %r", error)
            else:
                if messages == 0:
                    break
            time.sleep(0.5)
        else:
            console.print(f"[yellow]the learner still lags {messages} messages")
    time.sleep(3 * run.flush_interval_ms / 1000 + 1.0)


def report(
    run: Settings,
    options: DemoOptions,
    catalog: Catalog,
    traffic: Any,
    lag: LagSampler,
    replay: dict[str, Any],
    console: Console,
) -> dict[str, Any]:
    """Build the printed table, the checks and the HTML report."""
    from producers.demo_results import build_report

    lag.stop()
    return build_report(run, options, catalog, traffic, lag.samples, replay, console)
