"""The demo's verdicts and table from known counts."""

from __future__ import annotations

import pandas as pd

from producers.report import summarize_variants, variant_rich_table, verdicts


def impressions(variant: str, policy: str, n: int, clicks: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "event_id": [f"{variant}-{i}" for i in range(n)],
            "variant": variant,
            "policy": policy,
            "user_id": [f"u{i % 50}" for i in range(n)],
            "clicked": [1 if i < clicks else 0 for i in range(n)],
        }
    )


def test_verdicts_say_when_a_policy_does_not_beat_random_or_fell_back() -> None:
    frame = pd.concat(
        [
            impressions("control", "random", 4000, 120),
            impressions("ts", "thompson", 4000, 200),
            impressions("linucb", "linucb", 4000, 125),
            impressions("fm", "thompson", 4000, 190),
        ]
    )
    shown = pd.DataFrame(
        {
            "impression_id": frame["event_id"],
            "expected_ctr": 0.03,
            "best_ctr": 0.05,
        }
    )
    split = {"control": "random", "ts": "thompson", "linucb": "linucb", "fm": "fm"}
    rows = summarize_variants(frame, shown, "control", split)
    assert [r.variant for r in rows] == list(split)
    assert rows[1].lift is not None and rows[1].lift.low > 0
    assert abs(rows[0].regret - 4000 * 0.02) < 1e-6
    lines = verdicts(rows)
    assert "ts (thompson) beats random" in lines[0]
    assert any(
        "linucb (linucb) does NOT beat random" in line and "includes 0" in line
        for line in lines
    )
    assert any("fm was set to fm" in line and "fallback" in line for line in lines)
    assert any("fm (served as thompson) beats random" in line for line in lines)
    assert any("linucb (linucb) does worse than Thompson" in line for line in lines)
    assert variant_rich_table(rows, "t").row_count == 4
