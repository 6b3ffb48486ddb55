"""Sliding windows: bounded work per event, correct expiry, persistence."""

from __future__ import annotations

import numpy as np

from bandits.window import SlidingWindow


def brute_force_time(events, arm, now, length, buckets):
    width = length / buckets
    cutoff = np.floor(now / width) - buckets
    n = c = 0
    for a, t, dn, dc in events:
        if a == arm and np.floor(t / width) > cutoff:
            n, c = n + dn, c + dc
    return n, c


def test_time_window_matches_brute_force_over_a_day_of_traffic() -> None:
    rng = np.random.default_rng(0)
    w = SlidingWindow("time", length=3600.0, buckets=12)
    events, now = [], 0.0
    for _ in range(3000):
        now += float(rng.exponential(10.0))
        arm = f"p{rng.integers(5)}"
        w.add(arm, now, 1, 0)
        events.append((arm, now, 1, 0))
        if rng.random() < 0.3:  # a click on an earlier impression of this arm
            t = max(e[1] for e in events if e[0] == arm) - float(rng.random() * 60)
            if w.add(arm, t, 0, 1):
                events.append((arm, t, 0, 1))
        if rng.random() < 0.05:
            w.expire(now)
    w.expire(now)
    for arm in {e[0] for e in events}:
        assert w.totals(arm, now) == brute_force_time(events, arm, now, 3600.0, 12)


def test_expire_lists_exactly_the_arms_whose_totals_changed() -> None:
    w = SlidingWindow("time", length=100.0, buckets=10)
    w.add("a", 5.0, 2, 1)
    w.add("b", 55.0, 1, 0)
    w.add("a", 95.0, 1, 0)
    assert w.expire(99.9) == []
    assert w.expire(100.0) == ["a"]  # the bucket [0, 10) is now 100 s old
    assert w.totals("a", 100.0) == (1, 0) and w.totals("b", 100.0) == (1, 0)
    assert w.expire(149.0) == []
    assert w.expire(150.0) == ["b"] and "b" not in w and len(w) == 1


def test_totals_leave_out_expired_buckets_before_expire_runs() -> None:
    w = SlidingWindow("time", length=10.0, buckets=2)
    w.add("a", 1.0, 3, 1)
    w.add("a", 12.0, 1, 0)
    assert w.totals("a", 12.0) == (1, 0)


def test_click_for_impression_outside_window_counts_nothing() -> None:
    w = SlidingWindow("time", length=10.0, buckets=2)
    w.add("a", 100.0, 1, 0)
    assert w.add("a", 50.0, 0, 1) is False
    assert w.totals("a", 100.0) == (1, 0)


def test_work_per_event_is_bounded_and_expiry_proportional() -> None:
    w = SlidingWindow("time", length=1000.0, buckets=10)
    n_events = 20_000
    for i in range(n_events):
        w.add(f"p{i % 500}", i * 0.5, 1, 0)
    assert w.touched_buckets <= 2 * n_events  # near-ordered events: ~1 per event
    held = sum(len(w.state(f"p{a}")) // 3 for a in range(500))
    assert held <= 500 * 11  # adds drop their arm's expired buckets as they go
    before = w.touched_buckets
    assert len(w.expire(i * 0.5 + 5000.0)) == 500  # everything leaves
    assert w.touched_buckets - before == held and len(w) == 0


def test_impressions_window_keeps_the_last_length_impressions() -> None:
    w = SlidingWindow("impressions", length=100, buckets=4)
    for i in range(1000):
        w.add("a", float(i), 1, int(i % 10 == 0))
    n, c = w.totals("a", 1000.0)
    assert 100 - 25 < n <= 100
    assert c == sum(1 for i in range(1000 - n, 1000) if i % 10 == 0)
    assert w.expire(10**9) == []
    assert w.touched_buckets < 2 * 1000 + 100


def test_impressions_window_credits_click_to_its_impressions_bucket() -> None:
    w = SlidingWindow("impressions", length=20, buckets=2)
    w.add("a", 0.0, 10, 0)
    w.add("a", 10.0, 10, 0)
    w.add("a", 5.0, 0, 1)  # impression in the first bucket
    assert w.totals("a", 20.0) == (20, 1)
    w.add("a", 20.0, 1, 0)  # a new bucket pushes the first (and its click) out
    assert w.totals("a", 20.0) == (11, 0)
    assert w.add("a", 3.0, 0, 1) is False


def test_batch_of_impressions_spills_over_buckets() -> None:
    w = SlidingWindow("impressions", length=30, buckets=3)
    w.add("a", 0.0, 25, 0)
    assert w.state("a") == [0.0, 10, 0, 0.0, 10, 0, 0.0, 5, 0]
    w.add("a", 1.0, 10, 0)
    assert w.totals("a", 1.0) == (25, 0)


def test_state_restore_round_trip_both_kinds() -> None:
    for kind in ("time", "impressions"):
        w = SlidingWindow(kind, length=60.0, buckets=6)
        for i in range(40):
            w.add("a", float(i * 3), 1, i % 3 == 0)
        state = w.state("a")
        restored = SlidingWindow(kind, length=60.0, buckets=6)
        restored.restore("a", state)
        assert restored.state("a") == state
        assert restored.totals("a", 120.0) == w.totals("a", 120.0)
        assert restored.expire(200.0) == w.expire(200.0)
        assert restored.totals("a", 200.0) == w.totals("a", 200.0)
