"""What the gateway keeps between rows stays small, so collections stay short.

Objects a row leaves behind outlive the garbage collector's young generation
and lengthen its pauses; these tests pin down how often each cache that
outlives a row is replaced.
"""

from __future__ import annotations

import gc

from gateway.config import RuleConfig
from gateway.fallback import FallbackCache
from gateway.retirement import Retirement
from gateway.state import PosterCache, VideoState


def _state(video_id: str, poster: str) -> VideoState:
    return VideoState(video_id, {}, [poster], frozenset(), {}, frozenset())


def test_a_video_remembered_for_the_fallback_is_replaced_at_most_every_few_s():
    cache = FallbackCache(PosterCache(ttl_s=60), every_s=5.0)
    first = _state("v", "p-old")
    cache.remember([first], now=100.0)
    cache.remember([_state("v", "p-new"), _state("w", "p-w")], now=104.0)
    assert cache._videos["v"] is first  # younger than five seconds: kept
    assert cache._videos["w"].poster_ids == ["p-w"]  # a new video is kept at once
    cache.remember([_state("v", "p-new")], now=100.0 + cache.every_s + 0.5)
    assert cache._videos["v"].poster_ids == ["p-new"]


def test_a_queued_video_keeps_its_counts_until_its_posters_or_rules_change():
    retirement = Retirement(seed=0)
    rules = RuleConfig(retire_min_impressions=10)

    def row(posters: list[str], impressions: list[float], config=rules) -> None:
        retirement.row_statuses(
            config, ["v"], posters, impressions, [1.0, 2.0], [(0, 2)]
        )

    row(["a", "b"], [100.0, 200.0])
    row(["a", "b"], [110.0, 210.0])
    assert list(retirement._queue["v"][2]) == [100.0, 200.0]
    row(["a", "c"], [120.0, 220.0])  # another poster: judged afresh
    assert list(retirement._queue["v"][2]) == [120.0, 220.0]
    row(["a", "c"], [130.0, 230.0], RuleConfig(retire_min_impressions=20))
    assert list(retirement._queue["v"][2]) == [130.0, 230.0]


def test_the_app_freezes_what_it_holds_at_startup(gateway):
    # Once per process: whichever test started an app first froze it, and
    # nothing but the gateway's startup freezes.
    assert gateway.client.get("/healthz").status_code == 200
    assert gc.get_freeze_count() > 0


class _Held:
    """An object the collector tracks, as a cache entry is."""

    def __init__(self, i: int) -> None:
        self.i = i


def test_what_outlives_a_full_collection_is_frozen_and_still_freed(gateway):
    import time
    import weakref

    from gateway.service import SURVIVORS

    assert gateway.client.get("/healthz").status_code == 200
    held = [_Held(i) for i in range(20_000)]  # a cache filled after startup
    before, freezes = gc.get_freeze_count(), SURVIVORS.freezes
    gc.collect()  # a full collection: `held` survives it
    deadline = time.monotonic() + 5
    while SURVIVORS.freezes == freezes:  # the gateway's loop freezes them
        assert time.monotonic() < deadline, "survivors of a full collection not frozen"
        time.sleep(0.02)
    assert gc.get_freeze_count() >= before + len(held)

    # A frozen object is still freed when its last reference goes.
    probe = weakref.ref(held[0])
    del held
    assert probe() is None


def test_everything_is_thawed_and_collected_now_and_then(gateway):
    import time

    from gateway.service import SURVIVORS

    assert gateway.client.get("/healthz").status_code == 200
    thaws, every = SURVIVORS.thaws, SURVIVORS.thaw_every_s
    SURVIVORS.thaw_every_s = 0.2
    try:
        # A cycle frozen with the survivors is garbage a full collection of
        # frozen objects never sees, until the thaw.
        cycle: list = []
        cycle.append(cycle)
        gc.collect()
        collected = []
        gc.callbacks.append(lambda phase, info: collected.append(info["collected"]))
        del cycle
        deadline = time.monotonic() + 5
        while SURVIVORS.thaws == thaws:
            assert time.monotonic() < deadline, "never thawed"
            time.sleep(0.02)
        assert sum(collected) >= 1
    finally:
        SURVIVORS.thaw_every_s = every
        gc.callbacks.pop()
