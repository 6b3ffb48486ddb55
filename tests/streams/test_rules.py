"""Pure pieces of the learner: dedupe, attribution, checks, model shards."""

from __future__ import annotations

import numpy as np
import pytest

from bandits.features import cross_features
from streams.attribution import CLOCK_SKEW_MS, GRACE_MS, Attribution
from streams.dedupe import DedupeWindow
from streams.shards import LinUCBShard, feature_rows, merge_linucb
from streams.validate import check_event

ARM = ("v1", "p1")


def click(**overrides):
    record = {
        "event_id": "c1",
        "event_time": 1000,
        "impression_id": "i1",
        "user_id": "u",
        "video_id": "v1",
        "poster_id": "p1",
        "placement": "",
    }
    record.update(overrides)
    return record


def test_dedupe_counts_a_repeat_once_and_forgets_after_the_window():
    d = DedupeWindow(window_ms=1000)
    assert d.seen("a", 0) is False
    assert d.seen("a", 999) is True
    assert d.hits == 1
    assert d.expire(now_ms=999) == 0  # still inside the window
    assert d.expire(now_ms=1001) == 1
    assert "a" not in d
    assert d.seen("a", 1002) is False


def test_dedupe_changes_are_handed_out_once_and_restore_is_not_a_change():
    d = DedupeWindow(window_ms=10_000)
    d.seen("a", 5)
    d.seen("b", 6)
    assert d.take_changes() == {"a": 5, "b": 6}
    assert d.take_changes() == {}
    fresh = DedupeWindow(window_ms=10_000)
    fresh.restore([("b", 6), ("a", 5)])
    assert fresh.seen("a", 7) is True
    assert fresh.take_changes() == {}


def test_dedupe_memory_is_bounded_by_the_window():
    d = DedupeWindow(window_ms=100)
    for t in range(10_000):
        d.seen(f"id{t}", t)
        d.expire(t)
    assert len(d) <= 101


def test_click_within_the_window_is_credited_once():
    a = Attribution(window_ms=60_000)
    a.add_impression("i1", 0, ARM, "p1", b"x")
    assert a.add_click("c1", "i1", 60_000, "p1", b"y")[0] == "credited"
    assert a.add_click("c2", "i1", 61_000, "p1", b"y")[0] == "repeat"


def test_click_after_the_window_or_on_another_poster_earns_nothing():
    a = Attribution(window_ms=60_000)
    a.add_impression("i1", 0, ARM, "p1", b"x")
    assert a.add_click("c1", "i1", 60_001, "p1", b"y")[0] == "after_window"
    assert a.add_click("c2", "i1", 1_000, "p2", b"y")[0] == "mismatch"
    assert a.add_click("c3", "i1", -CLOCK_SKEW_MS - 1, "p1", b"y")[0] == (
        "after_window"
    )
    assert a.add_click("c4", "i1", -CLOCK_SKEW_MS, "p1", b"y")[0] == "credited"


def test_early_click_waits_and_is_credited_when_its_impression_arrives():
    a = Attribution(window_ms=60_000)
    assert a.add_click("c1", "i1", 5_000, "p1", b"y") == ("waiting", None)
    judged = a.add_impression("i1", 1_000, ARM, "p1", b"x")
    assert [outcome for outcome, _, _ in judged] == ["credited_after_wait"]
    assert a.pending["i1"].credited
    assert not a.waiting


def test_waiting_click_is_given_up_once_the_clock_passes_it():
    a = Attribution(window_ms=60_000)
    a.add_click("c1", "i-never", 5_000, "p1", b"y")
    a.add_impression("i2", 5_000 + GRACE_MS, ARM, "p1", b"x")
    assert a.expire() == ([], 0)
    a.add_impression("i3", 5_001 + GRACE_MS, ARM, "p1", b"x")
    assert a.expire() == ([], 1)
    assert not a.waiting


def test_waiting_clicks_are_capped():
    a = Attribution(window_ms=60_000, max_waiting=10)
    for i in range(25):
        a.add_click(f"c{i}", f"i{i}", 0, "p1", b"y")
    _, given_up = a.expire()
    assert given_up == 15
    assert len(a.waiting) == 10


def test_pending_impressions_expire_after_window_and_grace():
    a = Attribution(window_ms=1_000)
    a.add_impression("i1", 0, ARM, "p1", b"x")
    a.add_impression("i2", 0, ARM, "p1", b"x")
    a.add_click("c2", "i2", 10, "p1", b"y")
    a.add_impression("i3", 1_000 + GRACE_MS, ARM, "p1", b"x")
    assert a.expire()[0] == []
    a.add_impression("i4", 1_001 + GRACE_MS, ARM, "p1", b"x")
    unclicked, _ = a.expire()
    assert [i for i, _ in unclicked] == ["i1"]  # i2 was credited
    assert set(a.pending) == {"i3", "i4"}
    pending_changes, _ = a.take_changes()
    assert pending_changes["i1"] is None and pending_changes["i2"] is None


@pytest.mark.parametrize(
    ("overrides", "key", "reason"),
    [
        ({"event_id": ""}, b"v1", "empty event_id"),
        ({"impression_id": ""}, b"v1", "empty impression_id"),
        ({"video_id": ""}, None, "empty video_id"),
        ({"event_time": -1}, b"v1", "negative event_time"),
        ({}, b"other", "is not the video id"),
        ({}, None, "no key (events are keyed by their video id)"),
    ],
)
def test_check_event_names_what_is_wrong(overrides, key, reason):
    found = check_event("click", click(**overrides), key)
    assert found is not None and reason in found


def test_check_event_rejects_non_finite_features_and_passes_good_ones():
    impression = {
        "event_id": "i1",
        "event_time": 0,
        "video_id": "v",
        "poster_id": "p",
        "context": {"age": float("nan")},
        "poster_features": {},
    }
    assert "not finite" in check_event("impression", impression, b"v")
    impression["context"] = {"age": 0.5}
    assert check_event("impression", impression, b"v") is None
    assert check_event("click", click(), b"v1") is None


def test_feature_rows_equal_the_shared_cross_features():
    pairs = [
        ({"night": 1.0, "age": 0.5}, {"dark": 1.0}),
        ({}, {}),
        ({"age": 0.25, "night": 0.0}, {"dark": 0.5}),
        ({"x": 2.0}, {"faces": 3.0, "dark": 1.0}),
        ({"x": 2.0}, {"sharpness": 900.0, "dominant_0_r": 200.0}),
    ]
    X = feature_rows(pairs, 32)
    for row, (context, poster) in zip(X, pairs, strict=True):
        assert np.allclose(row, cross_features(context, poster, 32))


def test_linucb_shards_merge_to_the_model_learnt_in_one_place():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 8))
    clicked = rng.random(40) < 0.3
    shards = [LinUCBShard(8), LinUCBShard(8)]
    for i, x in enumerate(X):
        shard = shards[i % 2]
        shard.add_impressions(x[None, :])
        if clicked[i]:
            shard.add_clicks(x[None, :])
    merged = merge_linucb(shards, alpha=1.0, ridge=1.0)
    from bandits.linucb import LinUCB

    direct = LinUCB(dim=8, alpha=1.0, ridge=1.0)
    direct.update_many(X, clicked.astype(float))
    assert np.allclose(merged.a, direct.a)
    assert np.allclose(merged.theta, direct.theta)
    assert merged.n_updates == 40
    round_trip = LinUCBShard.from_mapping(
        {k.encode(): v for k, v in shards[0].to_mapping().items()}, 8
    )
    assert np.array_equal(round_trip.a, shards[0].a)
    with pytest.raises(ValueError, match="dim"):
        LinUCBShard.from_mapping(
            {k.encode(): v for k, v in shards[0].to_mapping().items()}, 4
        )


def test_fm_shard_restores_exactly_and_draws_latents_by_name():
    from streams.fm_shard import FMShard

    a, b = FMShard(seed=3), FMShard(seed=3)
    a.learn([{"u:age": 0.5, "poster=p1": 1.0}], [True], [1.0])
    b.learn([{"poster=p1": 1.0, "u:age": 0.5}], [True], [1.0])
    assert np.allclose(a.fm.model.latents["poster=p1"], b.fm.model.latents["poster=p1"])
    restored = FMShard.from_export(a.export(), seed=3)
    more = [{"u:age": 0.25, "poster=p2": 1.0}]
    a.learn(more, [False], [10.0])
    restored.learn(more, [False], [10.0])
    assert restored.export() == a.export()


def test_fm_merge_keeps_each_shard_for_the_posters_it_learnt():
    from bandits.fm import scorer_from_export
    from streams.fm_shard import FMShard, merge_fm

    one, two = FMShard(seed=0), FMShard(seed=0)
    user = {"u:age": 1.0}
    one.learn([{**user, "poster=p1": 1.0}] * 30, [True] * 30, [1.0] * 30)
    two.learn([{**user, "poster=p2": 1.0}] * 10, [False] * 10, [1.0] * 10)
    merged = merge_fm([one.export(), two.export(), FMShard(seed=0).export()])
    assert merged["version"] == 40
    assert len(merged["shards"]) == 2  # the empty shard is left out
    scorer = scorer_from_export(merged)
    x1, x2 = {**user, "poster=p1": 1.0}, {**user, "poster=p2": 1.0}
    own = [
        scorer_from_export(one.export()).logits([x1])[0],
        scorer_from_export(two.export()).logits([x2])[0],
    ]
    # Each poster is scored by its own shard, user features included.
    assert scorer.logits([x1, x2]).tolist() == pytest.approx(own)
    # A poster no shard knows goes with the video's other candidates.
    new = {**user, "poster=p9": 1.0}
    assert scorer.logits([x2, new])[1] == pytest.approx(
        scorer_from_export(two.export()).logits([new])[0]
    )
    assert merge_fm([FMShard(seed=0).export()]) is None


def test_fm_sample_is_stable_and_near_its_rate():
    from streams.fm_shard import in_fm_sample

    kept = [in_fm_sample(f"i{i}", 0.1) for i in range(20_000)]
    assert 0.08 < sum(kept) / len(kept) < 0.12
    assert kept == [in_fm_sample(f"i{i}", 0.1) for i in range(20_000)]
    assert all(in_fm_sample(f"i{i}", 1.0) for i in range(1000))


async def test_transaction_writes_atomically_and_reports_refusals(stack):
    import redis.asyncio as aioredis
    from redis.exceptions import ResponseError

    from streams.resp import Transaction

    client = aioredis.Redis.from_url(stack.redis_url)
    try:
        t = Transaction()
        t.hset("resp-test:h", mapping={"a": b"1", "b": 2.5, "c": 3})
        t.execute_command("ZADD", "resp-test:z", 1.5, "x", 2.0, "y")
        t.hdel("resp-test:h", "c")
        assert await t.execute(client) == [3, 2, 1]
        assert await client.hgetall("resp-test:h") == {b"a": b"1", b"b": b"2.5"}
        assert await client.zrange("resp-test:z", 0, -1) == [b"x", b"y"]
        bad = Transaction()
        bad.hset("resp-test:h", mapping={"d": b"4"})
        bad.execute_command("HSET", "resp-test:z", "f", "v")  # wrong type
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await bad.execute(client)
        assert await client.ping()  # the pool still works after a refusal
    finally:
        await client.delete("resp-test:h", "resp-test:z")
        await client.aclose()
