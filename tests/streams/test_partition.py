"""A partition learner saved to the real Redis and rebuilt from it."""

from __future__ import annotations

import numpy as np
import redis.asyncio as aioredis

from schemas.codec import get_codec
from streams.partition import PartitionLearner
from streams.resp import Transaction
from streams.state_keys import StreamKeys
from tests.streams.workers import event_stream


class Rec:
    def __init__(self, offset, key, value):
        self.offset, self.key, self.value = offset, key, value


def records(settings):
    codec = get_codec()
    sends, expected = event_stream(seed=5, impressions=800, videos=6)
    impressions, clicks = [], []
    for kind, record in sends:
        target = impressions if kind == "impression" else clicks
        value = codec.encode(kind, record)
        target.append(Rec(len(target), record["video_id"].encode(), value))
    return impressions, clicks, expected


async def save(learner, client, keys, group):
    t = Transaction()
    learner.write(t, keys, group, now_ms=1)
    await t.execute(client)


async def load(settings, client, keys, group, topics):
    pipe = client.pipeline(transaction=False)
    PartitionLearner.queue_load(pipe, keys, group, 0)
    learner = PartitionLearner(0, settings, get_codec(), 16)
    learner.restore(await pipe.execute(), topics)
    return learner


def applied(settings, impressions, clicks, dead):
    """A new partition learner that applied ``impressions`` and ``clicks``."""
    learner = PartitionLearner(0, settings, get_codec(), 16)
    learner.apply_impressions("imp", impressions, dead)
    learner.apply_clicks("clk", clicks, dead)
    learner.advance()
    return learner


def partition_settings(make_settings):
    return make_settings(
        topics=False,
        redis_prefix="part" + str(np.random.default_rng().integers(1e9)),
        window_s=60.0,
        window_buckets=6,
        attribution_window_s=600.0,
        fm_sample_rate=1.0,
    )


async def test_restored_learner_continues_exactly(make_settings, stack):
    settings = partition_settings(make_settings)
    keys, group, topics = StreamKeys(settings.redis_prefix), "g", ("imp", "clk")
    impressions, clicks, expected = records(settings)
    half_i, half_c = len(impressions) // 2, len(clicks) // 2
    client = aioredis.Redis.from_url(stack.redis_url)
    dead: list = []
    try:
        straight = applied(settings, impressions, clicks, dead)

        first = PartitionLearner(0, settings, get_codec(), 16)
        first.apply_impressions("imp", impressions[:half_i], dead)
        first.apply_clicks("clk", clicks[:half_c], dead)
        first.advance()
        await save(first, client, keys, group)

        second = await load(settings, client, keys, group, topics)
        assert second.offsets == {"imp": half_i, "clk": half_c}
        # The whole stream again, as after a crash: the first half is skipped.
        second.apply_impressions("imp", impressions, dead)
        second.apply_clicks("clk", clicks, dead)
        second.advance()
        assert second.counts["skipped_replay"] == half_i + half_c
        assert dead == []

        assert second.alltime == straight.alltime
        for (video, field), (n, c) in straight.alltime.items():
            assert [n, c] == list(expected[(video, field)])
            assert second.window.totals((video, field), 1e12) == (
                straight.window.totals((video, field), 1e12)
            )
        assert set(second.attribution.pending) == set(straight.attribution.pending)
        assert set(second.attribution.waiting) == set(straight.attribution.waiting)
        assert np.allclose(second.linucb.a, straight.linucb.a)
        assert np.allclose(second.linucb.b, straight.linucb.b)
        assert second.fm.examples == straight.fm.examples > 0
    finally:
        await client.aclose()


async def test_records_applied_before_a_reset_count_once_when_fetched_again(
    make_settings, stack
):
    """A recreated topic's new log grew past the stored offset before the
    learner noticed: it applied the records from there, then was reset to the
    start (as :mod:`streams.resume` does) and fetches them all again."""
    settings = partition_settings(make_settings)
    keys, group, topics = StreamKeys(settings.redis_prefix), "g", ("imp", "clk")
    impressions, clicks, expected = records(settings)
    old_i, old_c = len(impressions) // 3, len(clicks) // 3
    at_i, at_c = len(impressions) - 5, len(clicks) - 5
    client = aioredis.Redis.from_url(stack.redis_url)
    dead: list = []
    try:
        straight = applied(settings, impressions, clicks, dead)

        learner = PartitionLearner(0, settings, get_codec(), 16)
        learner.offsets = {"imp": old_i, "clk": old_c}
        learner.topic_ids = {"imp": "new-imp", "clk": "new-clk"}
        learner.apply_impressions("imp", impressions[:at_i], dead)
        learner.apply_clicks("clk", clicks[:at_c], dead)
        learner.advance()
        assert learner.counts["skipped_replay"] == old_i + old_c
        await save(learner, client, keys, group)
        learner = await load(settings, client, keys, group, topics)
        assert learner.topic_ids == {"imp": "new-imp", "clk": "new-clk"}
        assert learner.offsets == {"imp": at_i, "clk": at_c}

        learner.offsets = {"imp": 0, "clk": 0}
        learner.fetched_before_reset = {"imp": at_i, "clk": at_c}
        # A batch fetched before the reset's seek, handed over after it.
        learner.apply_impressions("imp", impressions[at_i:], dead)
        learner.apply_clicks("clk", clicks[at_c:], dead)
        assert learner.counts["fetched_before_reset"] == 10
        assert learner.offsets == {"imp": 0, "clk": 0}
        learner.apply_impressions("imp", impressions, dead)
        learner.apply_clicks("clk", clicks, dead)
        learner.advance()
        assert dead == []

        assert learner.offsets == {"imp": len(impressions), "clk": len(clicks)}
        assert learner.alltime == straight.alltime
        for (video, field), (n, c) in straight.alltime.items():
            assert [n, c] == list(expected[(video, field)])
        # Counted once: every record applied before the reset is a repeat now.
        assert learner.counts["dedupe_impression"] >= at_i - old_i
        assert set(learner.attribution.pending) == set(straight.attribution.pending)
    finally:
        await client.aclose()
