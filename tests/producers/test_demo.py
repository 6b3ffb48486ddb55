"""The short demo end to end against the real local stack.

The demo's table and report must say what the topics hold and what the
learner left in Redis; both are counted here independently of the demo's own
reading code, and no process of the demo may outlive it.
"""

from __future__ import annotations

import io
import os
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from rich.console import Console

from bandits.state import ArmStats
from bench.sim_policies import play
from keyart.keys import Keys
from keyart.settings import Settings
from producers.simulator import ClickParams
from producers.users import load_users
from schemas.codec import get_codec

pytestmark = pytest.mark.slow


def read_all(bootstrap: str, topic: str, kind: str, idle_s: float = 3.0) -> list:
    """Every record of ``topic``, read by direct assignment until ``idle_s``
    seconds pass without a new one."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "test-demo-read",
            "enable.auto.commit": False,
        }
    )
    codec = get_codec()
    out = []
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions]
        )
        last = time.monotonic()
        while time.monotonic() - last < idle_s:
            for message in consumer.consume(500, timeout=0.5):
                if message.error():
                    continue
                out.append(codec.decode(kind, message.value()))
                last = time.monotonic()
    finally:
        consumer.close()
    return out


def processes_with_env(marker: bytes) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_short_demo_reports_what_kafka_and_redis_hold(
    make_settings, tmp_path, redis_client
) -> None:
    from producers.demo import DEMO_VIDEOS, DemoOptions, run_demo
    from producers.replay import OBD_VIDEO

    settings = make_settings()
    options = DemoOptions(
        seconds=30.0, short=True, seed=11, out_dir=tmp_path / "demo", obd_rounds=2000
    )
    output = io.StringIO()
    summary = run_demo(
        settings, options, Console(file=output, width=160), start_stack=False
    )

    # Nothing the demo started is still running.
    marker = f"KEYART_TOPIC_PREFIX={summary['topic_prefix']}".encode()
    assert processes_with_env(marker) == []

    # Independent count of the topics: distinct ids, clicks within the window.
    prefix = summary["topic_prefix"]
    impressions = read_all(
        settings.kafka_bootstrap, f"{prefix}.impressions", "impression"
    )
    clicks = read_all(settings.kafka_bootstrap, f"{prefix}.clicks", "click")
    by_id = {r["event_id"]: r for r in impressions}
    window_ms = options.attribution_window_s * 1000
    clicked = set()
    for click in {c["event_id"]: c for c in clicks}.values():
        shown = by_id.get(click["impression_id"])
        if shown and 0 <= click["event_time"] - shown["event_time"] <= window_ms:
            clicked.add(click["impression_id"])
    variant_to_n = Counter(
        r["variant"] for r in by_id.values() if r["video_id"] != OBD_VIDEO
    )
    variant_to_c = Counter(
        by_id[i]["variant"] for i in clicked if by_id[i]["video_id"] != OBD_VIDEO
    )
    rows = {row["variant"]: row for row in summary["variants"]}
    assert set(rows) == {name for name, _ in options.variants}
    for variant, row in rows.items():
        assert row["impressions"] == variant_to_n[variant] > 100, variant
        assert row["clicks"] == variant_to_c[variant], variant
    assert sum(variant_to_c.values()) > 10

    # The learner's arms in Redis hold the same counts, video by video.
    keys = Keys(summary["redis_prefix"])
    for video in [*DEMO_VIDEOS, OBD_VIDEO]:
        raw = redis_client.hgetall(keys.arms(video))
        stats = [ArmStats.unpack(v) for k, v in raw.items() if not k.startswith(b"_")]
        video_ids = [i for i, r in by_id.items() if r["video_id"] == video]
        assert sum(s.impressions for s in stats) == len(video_ids), video
        assert sum(s.clicks for s in stats) == len(clicked & set(video_ids)), video
    assert sum(1 for r in by_id.values() if r["video_id"] == OBD_VIDEO) == 2000
    # and expire a day later rather than pile up in a shared Redis.
    for video in DEMO_VIDEOS:
        assert 0 < redis_client.ttl(keys.arms(video)) <= options.keys_ttl_s

    # The printed table and the report show the same numbers.
    printed = output.getvalue()
    html = Path(summary["report"]).read_text()
    for variant, row in rows.items():
        assert variant in printed and variant in html
        assert f"<td>{row['impressions']}</td>" in html
    assert "report:" in printed
    assert summary["traffic"]["duplicates_sent"] > 0
    assert summary["traffic"]["select_errors"] == 0

    # The catalog it wrote replays offline (bench/sim_policies.py).
    catalog = orjson.loads((options.out_dir / "catalog.json").read_bytes())
    assert set(catalog["video_to_posters"]) == set(DEMO_VIDEOS)
    for posters in catalog["video_to_posters"].values():
        assert posters and all(catalog["poster_to_features"][p] for p in posters)
    ctr = play(
        catalog,
        load_users(),
        Settings().model_dump(),
        ClickParams(seed=11),
        seconds=20.0,
        rate=20.0,
        flush_s=1.0,
        seed=1,
    )
    policies = ("random", "thompson", "linucb", "fm")
    assert set(ctr) == {*policies, *(f"{p} (last third)" for p in policies)}
    assert all(0.0 < v < 0.5 for v in ctr.values())
