"""The FM's context vocabulary stays bounded whatever keys clients send.

Impressions go through a partition learner rebuilt from the real Redis (the
learner's own restore, which applies the settings), are saved to Redis,
published by the learner's publisher and read back by the gateway's model
cache, as in production.
"""

from __future__ import annotations

import logging
import random
import string

import numpy as np
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from gateway.scoring import ModelCache, PolicyBook
from gateway.state import PosterMeta
from schemas.codec import get_codec
from streams.fm_shard import FMShard
from streams.publish import ModelPublisher
from streams.state_keys import StreamKeys
from streams.vocabulary import ContextVocabulary
from tests.streams.test_partition import Rec, load, save
from tests.streams.workers import BASE_MS

BASE_CONTEXT = {"age": 0.5, "night": 1.0}
JUNK_PER_IMPRESSION = 8


def impressions(rng: random.Random, start: int, n: int) -> list[Rec]:
    """Impressions ``start`` to ``start + n`` (their offsets too), each with
    the base context and new 60-character keys."""
    codec = get_codec()
    out = []
    for i in range(start, start + n):
        context = dict(BASE_CONTEXT)
        for _ in range(JUNK_PER_IMPRESSION):
            context["".join(rng.choices(string.ascii_letters, k=60))] = 1.0
        video, poster = f"v{i % 3}", f"p{i % 4}"
        record = {
            "event_id": f"i{i}",
            "event_time": BASE_MS + i * 30,
            "user_id": f"u{i % 50}",
            "video_id": video,
            "poster_id": poster,
            "placement": "row",
            "context": context,
            "poster_features": {"dark": int(poster[1:]) / 4},
        }
        out.append(Rec(i, video.encode(), codec.encode("impression", record)))
    return out


def refused(reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "keyart_streams_fm_context_refused_total", {"reason": reason}
    )
    return value or 0.0


def poster(poster_id: str) -> PosterMeta:
    return PosterMeta(
        poster_id=poster_id,
        video_id="v0",
        image_url=f"/posters/{poster_id}.jpg",
        aspect="2:3",
        placements=("row",),
        features={"dark": int(poster_id[1:]) / 4},
        tags=frozenset(),
        embedding=None,
        status="approved",
        created_ms=0,
    )


async def test_random_context_keys_stop_at_the_cap_and_the_model_still_scores(
    make_settings, stack, caplog
):
    cap = 12
    settings = make_settings(
        topics=False,
        redis_prefix="fmcap" + str(np.random.default_rng().integers(1e9)),
        topic_partitions=1,
        fm_sample_rate=1.0,
        fm_max_context_features=cap,
    )
    keys, group, topics = StreamKeys(settings.redis_prefix), "g", ("imp", "clk")
    client = aioredis.Redis.from_url(stack.redis_url)
    rng = random.Random(11)
    full_before = refused("full")
    caplog.set_level(logging.WARNING, logger="streams")
    dead: list = []
    try:
        learner = await load(settings, client, keys, group, topics)
        for batch in range(3):  # three batches: three reports, one warning
            learner.apply_impressions("imp", impressions(rng, batch * 100, 100), dead)
            learner.advance()
        await save(learner, client, keys, group)
        assert dead == []

        # Step 1: the shard holds the first `cap` context features, no more.
        fields = await client.hgetall(keys.model_shard("fm", 0))
        user = {k for k in fields if k.startswith(b"w:u:")}
        assert len(user) == cap
        assert {b"w:u:age", b"w:u:night"} <= user
        assert len([k for k in fields if k.startswith(b"v:u:")]) == cap
        # The other fields: intercept, examples, n_factors, p:dark and 4 ids.
        assert len(fields) == 3 + 2 * (cap + 1 + 4)
        seen = 300 * (len(BASE_CONTEXT) + JUNK_PER_IMPRESSION)
        admitted = 300 * len(BASE_CONTEXT) + (cap - len(BASE_CONTEXT))
        assert refused("full") - full_before == seen - admitted
        warnings = [
            r for r in caplog.records if "KEYART_FM_MAX_CONTEXT_FEATURES" in r.message
        ]
        assert len(warnings) == 1

        # Step 2: a learner restored from Redis keeps the same vocabulary.
        restored = await load(settings, client, keys, group, topics)
        more = impressions(rng, 300, 50)
        restored.apply_impressions("imp", more, dead)
        restored.advance()
        await save(restored, client, keys, group)
        fields = await client.hgetall(keys.model_shard("fm", 0))
        assert len([k for k in fields if k.startswith(b"w:u:")]) == cap
        assert int(fields[b"examples"]) == 350

        # Step 3: published and read by the gateway, the model scores, and a
        # key the model never learnt changes nothing, as in training.
        publisher = ModelPublisher()
        publisher.settings, publisher.redis, publisher.keys = settings, client, keys
        publisher._fm_published_at = 0.0
        await publisher._merge_fm(now_ms=BASE_MS)
        models = ModelCache(keys, settings)
        await models.refresh(client)
        book = PolicyBook(settings, models)
        name, policy, version = book.get("fm")
        assert (name, version) == ("fm", BASE_MS)
        posters = [poster(f"p{i}") for i in range(4)]

        def scores(context: dict[str, float]) -> np.ndarray:
            X = book.features(name, policy, posters, context)
            return policy.scores(None, X)  # type: ignore[attr-defined]

        base = scores(BASE_CONTEXT)
        # The keys of an impression the capped shard learnt without them.
        junk = get_codec().decode("impression", more[0].value)["context"]
        assert np.isfinite(base).all() and (base > 0).all()
        assert np.array_equal(scores({**junk, "never-sent": 3.0}), base)
        assert not np.array_equal(scores({"age": 1.0, "night": 1.0}), base)
    finally:
        await client.aclose()


def test_allow_list_admits_only_the_named_features(make_settings) -> None:
    settings = make_settings(fm_context_features="age, night")
    shard = FMShard(settings.seed, ContextVocabulary.from_settings(settings, 0))
    before = refused("not_allowed")
    x = {"u:age": 0.5, "u:night": 1.0, "u:other": 1.0, "p:dark": 0.5, "poster=a": 1}
    shard.learn([x], [False], [1.0])
    assert sorted(shard.export()["weights"]) == sorted(set(x) - {"u:other"})
    assert refused("not_allowed") - before == 1
