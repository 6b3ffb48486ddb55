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
