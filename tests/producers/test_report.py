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
    # Expected CTR: linucb's choices are better than random's (its clicks are
    # not), ts's are the same as random's (its clicks are better).
    expected = {"control": 0.03, "ts": 0.03, "linucb": 0.04, "fm": 0.045}
    shown = pd.DataFrame(
        {
            "impression_id": frame["event_id"],
            "expected_ctr": frame["variant"].map(expected)
            + 0.001 * (frame["user_id"].str[1:].astype(int) % 3),
            "best_ctr": 0.05,
        }
    )
    split = {"control": "random", "ts": "thompson", "linucb": "linucb", "fm": "fm"}
    rows = summarize_variants(frame, shown, "control", split)
    assert [r.variant for r in rows] == list(split)
    assert rows[1].lift is not None and rows[1].lift.low > 0
    assert rows[1].lift.method == "log-ratio, users"
    assert rows[2].expected_lift is not None and rows[2].expected_lift.low > 0
    control_expected = shown["expected_ctr"][frame["variant"] == "control"].sum()
    assert abs(rows[0].regret - (4000 * 0.05 - control_expected)) < 1e-6
    lines = verdicts(rows)
    assert lines[0].startswith("ts (thompson) beats random on clicks")
    assert "on expected CTR it does NOT separate" in lines[0]
    assert any(
        line.startswith("linucb (linucb) does NOT separate from random on clicks")
        and "on expected CTR it beats it" in line
        for line in lines
    )
    assert any("fm was set to fm" in line and "fallback" in line for line in lines)
    assert any(
        line.startswith("fm (served as thompson) beats random on clicks")
        for line in lines
    )
    assert any(
        line.startswith("linucb (linucb) does worse than Thompson sampling on clicks")
        and "on expected CTR it beats it" in line
        for line in lines
    )
    assert variant_rich_table(rows, "t").row_count == 4


def test_drift_verdicts_compare_the_two_thompsons_after_the_drift() -> None:
    from producers.demo_results import drift_verdicts

    window = impressions("ts", "thompson", 3000, 240)
    alltime = impressions("ts_alltime", "thompson_alltime", 3000, 90)
    frame = pd.concat([window, alltime], ignore_index=True)
    # The first third of each is before the drift (event time 0), the rest after.
    frame["event_time"] = [0 if i % 3 == 0 else 10_000 for i in range(len(frame))]
    shown = pd.DataFrame(
        {
            "impression_id": frame["event_id"],
            "expected_ctr": frame["policy"].map(
                {"thompson": 0.06, "thompson_alltime": 0.03}
            )
            + 0.001 * (frame.index % 5),
            "t_s": frame["event_time"] / 1000,
            "policy": frame["policy"],
            "regret": 0.01,
        }
    )
    lines = drift_verdicts(frame, shown, 5_000, 5.0)
    assert len(lines) == 2
    assert lines[0].startswith("After the drift at 5 s: sliding-window Thompson")
    assert lines[1].startswith(
        "After the drift, sliding-window Thompson beats all-time Thompson on clicks"
    )
    assert "on expected CTR it beats it" in lines[1]
    # without the all-time variant there is nothing to compare
    assert drift_verdicts(frame[frame["policy"] == "thompson"], shown, 5_000, 5.0) == []
