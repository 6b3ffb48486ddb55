"""Per-event cost of the sliding window the learner keeps for every arm.

Prints our cost per event (add) and per expired bucket (expire), for both
window kinds, beside the ceiling measured in the same run: a bare dict update of
two running counts per event (the least any Python per-event path can cost).

Run: ``python bench/bench_window.py``
"""

from __future__ import annotations

import time

import numpy as np

from bandits.window import SlidingWindow

N_EVENTS, N_ARMS = 300_000, 50_000


def main() -> None:
    rng = np.random.default_rng(0)
    arms = [f"video{a}:poster{a % 5}" for a in rng.integers(0, N_ARMS, N_EVENTS)]
    times = np.cumsum(rng.exponential(0.05, N_EVENTS)).tolist()
    clicks = (rng.random(N_EVENTS) < 0.05).astype(int).tolist()

    start = time.perf_counter()
    totals: dict[str, list[int]] = {}
    for arm, c in zip(arms, clicks, strict=True):
        t = totals.get(arm)
        if t is None:
            t = totals[arm] = [0, 0]
        t[0] += 1
        t[1] += c
    ceiling = (time.perf_counter() - start) / N_EVENTS * 1e6
    print(f"{N_EVENTS} events over {N_ARMS} arms")
    print(f"  ceiling (bare dict update): {ceiling:.2f} us/event")

    for kind, length in (("time", 3600.0), ("impressions", 1000)):
        window = SlidingWindow(kind, length, 24)  # type: ignore[arg-type]
        start = time.perf_counter()
        for arm, t, c in zip(arms, times, clicks, strict=True):
            window.add(arm, t, 1, c)
        per_event = (time.perf_counter() - start) / N_EVENTS * 1e6
        touched = window.touched_buckets / N_EVENTS
        line = (
            f"  {kind:11s}: add {per_event:.2f} us/event "
            f"({touched:.2f} buckets touched/event)"
        )
        if kind == "time":
            before = window.touched_buckets
            start = time.perf_counter()
            changed = window.expire(times[-1] + 2 * length)
            spent = time.perf_counter() - start
            expired = window.touched_buckets - before
            line += (
                f" | expire {spent / expired * 1e6:.2f} us/bucket "
                f"({expired} buckets, {len(changed)} arms)"
            )
        print(f"{line} | ceiling {ceiling:.2f} us/event")


if __name__ == "__main__":
    main()
