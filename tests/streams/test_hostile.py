"""Hostile single events against the partition learner and a real Redis.

One impression with a huge feature value, one dated decades ahead, bad
propensities: each must become a dead letter and leave the partition's saved
state (clock, dedupe memory, windows, LinUCB shard) as it was.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import redis.asyncio as aioredis

from schemas.codec import get_codec
from streams.attribution import CLOCK_LEAD_MS, GRACE_MS, Attribution
from streams.learner import Learner
from streams.partition import PartitionLearner
from streams.resp import Transaction
from streams.shards import LinUCBShard, merge_linucb
from streams.state_keys import StreamKeys
from streams.validate import MAX_FEATURE_ABS, MAX_FEATURE_KEYS, check_event

YEAR_MS = 365 * 86_400_000
DIM = 16


class Rec:
    def __init__(self, offset, key, value):
        self.offset, self.key, self.value = offset, key, value


def impression(i, t, **overrides):
    record = {
        "event_id": f"i{i}",
        "event_time": t,
        "user_id": "u",
        "video_id": "v",
        "poster_id": f"p{i % 2}",
        "placement": "row",
        "propensity": 0.5,
        "context": {"age": 0.5},
        "poster_features": {"dark": 0.25},
    }
    record.update(overrides)
    return record


def encoded(records, kind="impression", start=0):
    codec = get_codec()
    return [
        Rec(start + n, r["video_id"].encode(), codec.encode(kind, r))
        for n, r in enumerate(records)
    ]


def metric(name, **labels):
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture(scope="module")
def prefix_settings(make_settings, stack):
    def build():
        return make_settings(
            topics=False,
            redis_prefix="hostile" + str(np.random.default_rng().integers(1e9)),
            window_s=600.0,
            window_buckets=6,
            attribution_window_s=600.0,
            dedupe_window_s=3600.0,
        )

    return build


async def save(learner, client, keys):
    t = Transaction()
    learner.write(t, keys, "g", now_ms=1)
    await t.execute(client)


async def load(settings, client, keys):
    pipe = client.pipeline(transaction=False)
    PartitionLearner.queue_load(pipe, keys, "g", 0)
    learner = PartitionLearner(0, settings, get_codec(), DIM)
    learner.restore(await pipe.execute(), ("imp", "clk"))
    return learner


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"context": {"a": 1e160}}, "context['a'] = 1e+160 is outside"),
        ({"poster_features": {"a": -2e6}}, "poster_features['a'] = -2000000.0"),
        ({"context": {"a": math.nan}}, "context['a'] is not finite"),
        ({"context": {"a": 2.0, "b": math.nan, "c": 1.0}}, "context['b'] is not"),
        ({"context": {"a": 1.0, "b": math.inf}}, "context['b'] is not finite"),
        ({"poster_features": {"a": 0.5, "b": -math.inf}}, "['b'] is not finite"),
        ({"context": {"a": 1e308, "b": 1e308}}, "context['a'] = 1e+308 is outside"),
        ({"context": {f"k{i}": 0.0 for i in range(300)}}, "300 keys"),
        ({"propensity": math.nan}, "propensity nan is not in (0, 1]"),
        ({"propensity": -3.0}, "propensity -3.0"),
        ({"propensity": 0.0}, "propensity 0.0"),
        ({"propensity": 1.5}, "propensity 1.5"),
        ({"event_id": "x" * 5000}, "event_id longer than"),
        ({"event_time": 5_000_000_000_000}, "event_time in the future"),
    ],
)
def test_check_event_refuses_hostile_values(overrides, words):
    record = impression(1, 1_700_000_000_000, **overrides)
    reason = check_event("impression", record, b"v", now_ms=1_700_000_000_000)
    assert reason is not None and words in reason, reason


def test_check_event_accepts_the_edges():
    now = 1_700_000_000_000
    record = impression(
        1,
        now + 300_000,
        propensity=1.0,
        context={f"k{i}": MAX_FEATURE_ABS for i in range(MAX_FEATURE_KEYS)},
    )
    assert check_event("impression", record, b"v", now_ms=now) is None
    late = impression(1, now + 300_001)
    assert "future" in check_event("impression", late, b"v", now_ms=now)


async def test_hostile_impressions_leave_the_saved_partition_untouched(
    prefix_settings, stack
):
    settings = prefix_settings()
    keys = StreamKeys(settings.redis_prefix)
    client = aioredis.Redis.from_url(stack.redis_url)
    now = int(time.time() * 1000)
    good = [impression(i, now - 60_000 + i * 100) for i in range(50)]
    hostile = [
        impression(50, now + 50 * YEAR_MS),
        impression(51, now, context={"a": 1e160}),
        impression(52, now, propensity=math.nan),
        impression(53, now, propensity=-3.0),
    ]
    repeats = [impression(i, now + 1000) for i in range(10)]  # ids already counted
    try:
        learner = PartitionLearner(0, settings, get_codec(), DIM)
        dead: list = []
        learner.apply_impressions("imp", encoded(good), dead)
        learner.advance()
        await save(learner, client, keys)

        learner = await load(settings, client, keys)
        clock = learner.attribution.clock
        before = dict(learner.alltime)
        learner.apply_impressions("imp", encoded(hostile, start=50), dead)
        learner.advance()
        await save(learner, client, keys)

        learner = await load(settings, client, keys)
        learner.apply_impressions("imp", encoded(repeats, start=54), dead)
        learner.advance()
        await save(learner, client, keys)
        final = await load(settings, client, keys)
    finally:
        await client.aclose()
    reasons = [d[5] for d in dead]
    assert [d[2] for d in dead] == [50, 51, 52, 53]
    assert "event_time in the future" in reasons[0]
    assert "context['a'] = 1e+160" in reasons[1]
    assert "propensity nan" in reasons[2]
    assert "propensity -3.0" in reasons[3]
    assert final.attribution.clock == clock  # not moved by the future impression
    assert learner.counts["dedupe_impression"] == 10
    assert final.alltime == before  # no repeat counted, no hostile arm
    assert len(final.dedupe["impression"]) == 50
    assert final.window.totals(("v", "p0"), clock / 1000) == (25, 0)
    assert np.isfinite(final.linucb.a).all() and final.linucb.n == 50


def test_the_clock_never_passes_its_limit():
    a = Attribution(window_ms=60_000)
    a.clock_limit = 1_000_000
    a.add_impression("i1", 900_000, ("v", "p"), "p", b"")
    a.add_impression("i2", 10**15, ("v", "p"), "p", b"")
    assert a.clock == 1_000_000


def test_one_far_future_click_does_not_hold_back_the_others():
    a = Attribution(window_ms=60_000)
    a.add_impression("i0", 0, ("v", "p"), "p", b"")
    a.add_click("future", "gone", 50 * YEAR_MS, "p", b"")  # bypassing validation
    for i in range(500):
        assert a.add_click(f"c{i}", f"never{i}", 1000, "p", b"")[0] == "waiting"
    a.add_impression("i1", 300_000, ("v", "p"), "p", b"")
    _, given_up = a.expire()
    assert given_up == 500
    assert list(a.waiting) == ["future"]
    # Judged clicks leave the queue too, whatever their place in it.
    a.add_click("c-late", "i9", 300_000, "p", b"")
    a.add_impression("i9", 300_000, ("v", "p"), "p", b"")
    a.add_impression("i2", 10_000_000, ("v", "p"), "p", b"")
    assert a.expire()[1] == 0
    assert list(a.waiting) == ["future"]


async def test_a_non_finite_shard_is_never_written(prefix_settings, stack):
    settings = prefix_settings()
    keys = StreamKeys(settings.redis_prefix)
    client = aioredis.Redis.from_url(stack.redis_url)
    now = int(time.time() * 1000)
    try:
        learner = PartitionLearner(0, settings, get_codec(), DIM)
        learner.apply_impressions("imp", encoded([impression(0, now)]), [])
        await save(learner, client, keys)
        good = await client.hgetall(keys.model_shard("linucb", 0))
        before = metric("keyart_streams_non_finite_total", what="linucb_shard")
        # As if validation had missed something: an infinite row.
        with np.errstate(over="ignore"):
            learner.linucb.add_impressions(np.full((1, DIM), 1e160))
        await save(learner, client, keys)
        assert await client.hgetall(keys.model_shard("linucb", 0)) == good
        assert learner.linucb.n == 1 and np.isfinite(learner.linucb.a).all()
        after = metric("keyart_streams_non_finite_total", what="linucb_shard")
        assert after == before + 1
    finally:
        await client.aclose()


async def test_the_merge_skips_a_poisoned_shard_and_keeps_the_model_finite(
    prefix_settings, stack
):
    settings = prefix_settings().model_copy(update={"topic_partitions": 2})
    keys = StreamKeys(settings.redis_prefix)
    client = aioredis.Redis.from_url(stack.redis_url)
    rng = np.random.default_rng(3)
    healthy = LinUCBShard(64)
    healthy.add_impressions(rng.normal(size=(20, 64)))
    poisoned = LinUCBShard(64)
    with np.errstate(over="ignore"):  # a shard written before validation
        poisoned.add_impressions(np.full((1, 64), 1e160))
    try:
        await client.hset(keys.model_shard("linucb", 0), mapping=healthy.to_mapping())
        await client.hset(keys.model_shard("linucb", 1), mapping=poisoned.to_mapping())
        learner = Learner(None, settings, client)
        await learner._merge_models(1, idle=False)
        model = await client.hgetall(keys.model("linucb"))
    finally:
        await client.aclose()
    a = np.frombuffer(model[b"a"], dtype="<f8")
    assert np.isfinite(a).all()
    expected = merge_linucb([healthy], alpha=settings.linucb_alpha, ridge=1.0)
    assert np.allclose(a.reshape(64, 64), expected.a)
    assert int(model[b"n"]) == 20


def test_grace_keeps_a_recent_click_waiting():
    a = Attribution(window_ms=60_000)
    a.add_click("c", "i", 1000, "p", b"")
    a.add_impression("x", 1000 + GRACE_MS, ("v", "p"), "p", b"")
    assert a.expire()[1] == 0 and "c" in a.waiting


def click_of(i, t, impression_id):
    return {
        "event_id": f"c{i}",
        "event_time": t,
        "impression_id": impression_id,
        "user_id": "u",
        "video_id": "v",
        "poster_id": f"p{i % 2}",
        "placement": "row",
    }


async def test_an_impression_dated_ahead_does_not_give_up_early_clicks(
    prefix_settings, stack
):
    """The collector accepts events up to 300 s ahead; one of them must not
    pull the partition clock along, or every click that arrives a moment
    before its impression is given up after the grace."""
    settings = prefix_settings()
    keys = StreamKeys(settings.redis_prefix)
    client = aioredis.Redis.from_url(stack.redis_url)
    now = int(time.time() * 1000)
    dead: list = []
    try:
        learner = PartitionLearner(0, settings, get_codec(), DIM)
        learner.apply_impressions("imp", encoded([impression(0, now + 290_000)]), dead)
        learner.advance()
        await save(learner, client, keys)
        clock_after_ahead = learner.attribution.clock

        # Through Redis between batches, as a worker restart would.
        learner = await load(settings, client, keys)
        early = encoded([click_of(1, now + 500, "i1")], kind="click")
        learner.apply_clicks("clk", early, dead)
        learner.advance()
        given_up = learner.counts["no_impression"]
        await save(learner, client, keys)

        learner = await load(settings, client, keys)
        learner.apply_impressions("imp", encoded([impression(1, now)], start=1), dead)
        learner.advance()
    finally:
        await client.aclose()
    assert dead == []
    assert given_up == 0
    assert learner.counts["credited_after_wait"] == 1
    assert learner.alltime[("v", "p1")] == [1, 1]
    assert clock_after_ahead <= now + 2_000 + CLOCK_LEAD_MS
    # The impression dated ahead keeps its own time.
    assert learner.attribution.pending["i0"].time_ms == now + 290_000
