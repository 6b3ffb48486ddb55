"""Step 3 of ``keyart demo``: posters from the real videos become arms."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import orjson
from rich.console import Console

from keyart.keys import Keys
from keyart.settings import Settings
from producers.demo import DEMO_VIDEOS, PLACEMENT, DemoOptions
from producers.processes import ChildFailed, ProcessGroup, keyart_argv

__all__ = ["Catalog", "make_posters", "read_catalog"]


@dataclass
class Catalog:
    """The approved posters of the demo's videos that fit the placement."""

    video_to_posters: dict[str, list[str]] = field(default_factory=dict)
    poster_to_features: dict[str, dict[str, float]] = field(default_factory=dict)
    poster_to_video: dict[str, str] = field(default_factory=dict)
    poster_to_image: dict[str, Path] = field(default_factory=dict)
    approved_total: int = 0

    def to_json(self) -> bytes:
        """The posters of each video and their features, as JSON."""
        return orjson.dumps(
            {
                "video_to_posters": self.video_to_posters,
                "poster_to_features": self.poster_to_features,
            },
            option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS,
        )


def read_catalog(
    run: Settings,
    videos: Sequence[str] = tuple(DEMO_VIDEOS),
    placement: str = PLACEMENT,
) -> Catalog:
    """The approved posters of ``videos`` that fit ``placement``, from Redis."""
    import redis

    from gateway.placements import PLACEMENTS, fits

    keys = Keys(run.redis_prefix)
    client = redis.Redis.from_url(run.redis_url)
    catalog = Catalog()
    base = run.poster_url_base.rstrip("/")
    try:
        for video in videos:
            members = cast(set[bytes], client.smembers(keys.posters(video)))
            ids = sorted(p.decode() for p in members)
            catalog.approved_total += len(ids)
            for poster in ids:
                raw = cast(dict[bytes, bytes], client.hgetall(keys.poster(poster)))
                aspect = raw.get(b"aspect", b"").decode()
                placements = orjson.loads(raw.get(b"placements") or b"[]")
                if not fits(PLACEMENTS[placement], aspect, placements):
                    continue
                catalog.video_to_posters.setdefault(video, []).append(poster)
                catalog.poster_to_features[poster] = {
                    k: float(v)
                    for k, v in orjson.loads(raw.get(b"features") or b"{}").items()
                }
                catalog.poster_to_video[poster] = video
                url = raw.get(b"image_url", b"").decode()
                relative = url[len(base) :].lstrip("/") if url.startswith(base) else url
                catalog.poster_to_image[poster] = Path(run.poster_store) / relative
    finally:
        client.close()
    return catalog


def make_posters(
    group: ProcessGroup,
    run: Settings,
    env: dict[str, str],
    options: DemoOptions,
    console: Console,
) -> Catalog:
    """Publish the real videos, run the poster worker, wait for the arms."""
    from keyart.data import fetch
    from producers.events import EventProducer

    producer = EventProducer(run)
    for video_id, name in DEMO_VIDEOS.items():
        path = fetch(name, run.data_cache)
        producer.send(
            "video_published",
            {
                "event_id": f"{options.run_id}-{video_id}",
                "event_time": int(time.time() * 1000),
                "video_id": video_id,
                "title": video_id,
                "uri": str(path.resolve()),
                "kind": "other",
            },
        )
    producer.flush()
    del producer
    console.print(
        f"automatic approval is ON: candidates scoring >= "
        f"{run.auto_approve_score}"
        + (
            f" (the best {run.auto_approve_top} per aspect ratio)"
            if run.auto_approve_top is not None
            else ""
        )
        + " become arms without a human review"
    )
    with console.status(
        "making posters from "
        + " and ".join(DEMO_VIDEOS.values())
        + " (keyart posters worker)"
    ):
        group.run(
            "posters",
            keyart_argv("posters", "worker", "--max-messages", str(len(DEMO_VIDEOS))),
            env,
            timeout=600,
            poll=lambda: group.check_alive("streams", "gateway"),
        )

    # The learner turns poster_published events into arms; wait until they stop
    # arriving.
    deadline = time.monotonic() + 120
    last, stable_since = -1, time.monotonic()
    with console.status("waiting for the learner to publish the arms"):
        while time.monotonic() < deadline:
            group.check_alive("streams", "gateway")
            catalog = read_catalog(run)
            if catalog.approved_total != last:
                last, stable_since = catalog.approved_total, time.monotonic()
            ready = all(catalog.video_to_posters.get(v) for v in DEMO_VIDEOS)
            if ready and time.monotonic() - stable_since > 3:
                break
            time.sleep(0.5)
        else:
            raise ChildFailed(
                "no arms reached Redis within 120 s: see the learner's log in "
                f"{group.log_dir / 'streams.log'}"
            )
    for video, posters in catalog.video_to_posters.items():
        console.print(f"{video}: {len(posters)} approved posters for {PLACEMENT}")
    return catalog
