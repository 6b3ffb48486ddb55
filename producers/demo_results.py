"""The demo's results: read back from Kafka, checked against Redis, reported.

Every number in the table and the report is computed from the events on the
run's topics (impressions joined with clicks inside the attribution window);
the learner's arm counts in Redis are then compared with them, video by video,
and the comparison is printed and written into the report.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import Any, cast

import pandas as pd
from rich.console import Console
from rich.table import Table

from bandits.state import ArmStats
from keyart.keys import Keys
from keyart.settings import Settings
from producers.demo import DEMO_VIDEOS, DemoOptions
from producers.plots import (
    ctr_png,
    image_data_uri,
    lag_png,
    regret_png,
    replay_png,
    share_over_time_png,
)
from producers.replay import OBD_VIDEO
from producers.report import (
    DemoReport,
    render_html,
    replay_rows,
    summarize_variants,
    variant_rich_table,
    verdicts,
)

__all__ = ["build_report", "redis_arm_totals"]

LIMITATIONS = [
    "The click model is synthetic: its form and weights are made up so that the "
    "best poster depends on the viewer; nothing in it was fitted to real viewers. "
    "The users (MovieLens-100k) and the posters (made from real video) are real.",
    "CTR intervals treat impressions as independent; a user sees many rows, so "
    "they are somewhat too narrow. UCTR intervals and lifts count users.",
    "Lift intervals cover the users and clicks of this run; a policy also learns "
    "differently from one run to the next (its early draws), which they do not "
    "cover: repeat runs with other seeds (KEYART_SEED) to see that spread.",
    "A run lasts minutes: the contextual policies (LinUCB, the factorization "
    "machine) are judged early in their learning, and a short run may show them "
    "behind Thompson sampling. In three minutes a 10-20% difference separates on "
    "clicks only sometimes; the lift on expected CTR judges the same choices "
    "without click noise. bench/sim_policies.py replays this run's catalog.json "
    "in memory, many runs in minutes.",
    "The Open Bandit sample holds about 40 clicks in 10,000 rounds; each replayed "
    "policy matches about 1 round in 80, so its replay estimate rests on a "
    "handful of clicks and its interval is wide.",
]


def redis_arm_totals(run: Settings, video_id: str) -> tuple[int, int, int]:
    """All-time impressions and clicks summed over a video's arms, and the
    number of arms, as the learner left them in Redis."""
    import redis

    client = redis.Redis.from_url(run.redis_url)
    try:
        key = Keys(run.redis_prefix).arms(video_id)
        raw = cast(dict[bytes, bytes], client.hgetall(key))
    finally:
        client.close()
    n = c = arms = 0
    for name, value in raw.items():
        if name.startswith(b"_"):
            continue
        stats = ArmStats.unpack(value)
        n, c, arms = n + stats.impressions, c + stats.clicks, arms + 1
    return n, c, arms


def drift_verdicts(
    sim: pd.DataFrame, shown: pd.DataFrame, drift_ms: int, drift_s: float
) -> list[str]:
    """After the drift: does the sliding window recover where all-time lags?

    Compares the impressions of the two Thompson variants from the drift on,
    by their clicks and by the oracle's expected CTR, the user as the unit.
    """
    from producers.report import compare, user_lifts, user_sums

    after = sim[sim["event_time"] >= drift_ms].merge(
        shown[["impression_id", "expected_ctr"]],
        left_on="event_id",
        right_on="impression_id",
    )
    late = shown[shown["t_s"] >= drift_s].groupby("policy")["regret"].sum()
    sums = user_sums(after, "policy")
    if not {"thompson", "thompson_alltime"} <= set(sums):
        return []
    window, alltime = sums["thompson"], sums["thompson_alltime"]

    def rate(frame: pd.DataFrame, column: str) -> float:
        return 100 * frame[column].sum() / frame["impressions"].sum()

    return [
        f"After the drift at {drift_s:.0f} s: sliding-window Thompson shows "
        f"{rate(window, 'clicks'):.2f}% CTR (expected {rate(window, 'expected'):.2f}%,"
        f" regret {late.get('thompson', math.nan):.1f}), all-time Thompson "
        f"{rate(alltime, 'clicks'):.2f}% (expected {rate(alltime, 'expected'):.2f}%, "
        f"regret {late.get('thompson_alltime', math.nan):.1f}).",
        compare(
            "After the drift, sliding-window Thompson",
            "all-time Thompson",
            *user_lifts(alltime, window),
        ),
    ]


def _poster_cards(
    sim: pd.DataFrame, catalog: Any, video: str, start_ms: int
) -> dict[str, Any]:
    frame = sim[sim["video_id"] == video]
    total = max(len(frame), 1)
    cards = []
    for poster in catalog.video_to_posters.get(video, []):
        shown = frame[frame["poster_id"] == poster]
        n, c = len(shown), int(shown["clicked"].sum()) if len(shown) else 0
        features = catalog.poster_to_features.get(poster, {})
        faces = int(features.get("face_count", 0))
        traits = (
            f"{faces} face{'s' if faces != 1 else ''}"
            + (
                f" ({100 * features.get('largest_face_share', 0):.0f}% of area)"
                if faces
                else ""
            )
            + f", brightness {features.get('brightness', 0):.2f}"
            + f", warmth {features.get('warmth', 0):.2f}"
            + f", quality {features.get('quality', 0):.2f}"
        )
        cards.append(
            {
                "poster_id": poster[:12],
                "image": image_data_uri(catalog.poster_to_image[poster]),
                "impressions": n,
                "clicks": c,
                "ctr": f"CTR {100 * c / n:.2f}% ({c}/{n})" if n else "not shown",
                "share": f"{100 * n / total:.0f}%",
                "traits": traits,
            }
        )
    cards.sort(key=lambda card: -card["impressions"])
    return {
        "video_id": video,
        "posters": cards,
        "share_png": share_over_time_png(frame, video, start_ms),
    }


def build_report(
    run: Settings,
    options: DemoOptions,
    catalog: Any,
    traffic: Any,
    lag_samples: list[tuple[float, int, float]],
    replay: dict[str, Any],
    console: Console,
) -> dict[str, Any]:
    """Print the table and the checks, write the report; return the summary."""
    from bandits.evaluation.logs import load_kafka_logs

    with console.status("reading the run's events back from Kafka"):
        logs = load_kafka_logs(run)
    impressions = logs.impressions
    sim = impressions[impressions["video_id"] != OBD_VIDEO].reset_index(drop=True)
    obd = impressions[impressions["video_id"] == OBD_VIDEO]
    shown = pd.DataFrame([asdict(s) for s in traffic.shown])
    shown["regret"] = shown["best_ctr"] - shown["expected_ctr"]
    rows = summarize_variants(sim, shown, "control", dict(options.variants))
    lines = verdicts(rows)
    start_ms = int(sim["event_time"].min()) if len(sim) else 0
    drift_at = traffic.params.drift_at_s
    if drift_at is not None:
        lines += drift_verdicts(sim, shown, start_ms + int(drift_at * 1000), drift_at)

    # The learner's state against the events.
    checks, videos = [], {}
    for video, frame in [(v, sim[sim["video_id"] == v]) for v in DEMO_VIDEOS] + [
        (OBD_VIDEO, obd)
    ]:
        n, c, arms = redis_arm_totals(run, video)
        kafka_n, kafka_c = len(frame), int(frame["clicked"].sum()) if len(frame) else 0
        same = (n, c) == (kafka_n, kafka_c)
        videos[video] = {
            "kafka_impressions": kafka_n,
            "kafka_clicks": kafka_c,
            "redis_impressions": n,
            "redis_clicks": c,
            "arms": arms,
        }
        checks.append(
            f"{video}: Kafka holds {kafka_n} distinct impressions and {kafka_c} "
            f"attributed clicks; the learner's {arms} arms in Redis count {n} and "
            f"{c}: {'they agree' if same else 'they DIFFER'}"
        )
    undecodable = sum(logs.undecodable.values())
    checks.append(f"undecodable records on the topics: {undecodable}")

    results = replay["results"]
    params = traffic.params.as_dict()
    report = DemoReport(
        title=f"keyart demo, run {options.run_id}",
        summary=[
            f"{traffic.requests} rows requested by {shown['user_id'].nunique()} "
            f"MovieLens users over {traffic.seconds:.0f} s; {len(sim)} distinct "
            f"impressions and {int(sim['clicked'].sum())} attributed clicks in Kafka.",
            f"Posters made from {', '.join(DEMO_VIDEOS.values())} by the poster "
            f"worker; automatic approval at score >= {run.auto_approve_score}"
            + (
                f", the best {run.auto_approve_top} per aspect ratio."
                if run.auto_approve_top is not None
                else "."
            ),
            "Headroom under the click model, mean CTR over all 943 users at the "
            "start (random poster / best single poster / each user's own best): "
            + "; ".join(
                f"{video} {100 * h['random']:.1f}% / {100 * h['best_single']:.1f}% / "
                f"{100 * h['per_user_best']:.1f}%"
                for video, h in traffic.headroom.items()
            )
            + ". A context-free policy can reach the middle figure at best, a "
            "contextual one the last.",
            f"Clicks after the {run.attribution_window_s:.0f} s attribution window "
            f"earn nothing; {traffic.clicks_after_run} clicks due after the run "
            f"were never sent; {traffic.duplicates_sent} events were delivered twice.",
        ],
        rows=rows,
        verdicts=lines,
        videos=[_poster_cards(sim, catalog, v, start_ms) for v in DEMO_VIDEOS],
        regret_png=regret_png(shown),
        lag_png=lag_png(lag_samples, traffic.seconds),
        ctr_png=ctr_png(rows),
        replay_png=replay_png(
            {r.policy: r.curve for r in results}, len(replay["log"].rounds)
        ),
        replay_rows=replay_rows(results),
        checks=checks,
        parameters={
            "click model (synthetic)": params,
            "seconds": options.seconds,
            "seed": options.seed,
            "drift": options.drift,
            "attribution window (s)": run.attribution_window_s,
            "sliding window (s)": run.window_s,
            "topics": f"{run.topic_prefix}.*",
            "Redis keys": f"{run.redis_prefix}:*",
        },
        limitations=LIMITATIONS,
    )
    path = render_html(report, options.out_dir / "report.html")

    console.print(variant_rich_table(rows, "simulated traffic through the gateway"))
    for line in lines:
        bad = ("NOT" in line, "worse" in line, "fallback" in line)
        style = "red" if any(bad) else "green"
        console.print(f"[{style}]{line}")
    for line in checks:
        console.print(line)
    replay_table = Table(title="Open Bandit Dataset replay (real clicks)")
    for name in ("policy", "matched rounds", "clicks", "CTR [95%]"):
        replay_table.add_column(name, justify="left" if name == "policy" else "right")
    for row in report.replay_rows:
        replay_table.add_row(
            row["policy"], str(row["matched"]), str(row["clicks"]), row["ctr"]
        )
    console.print(replay_table)
    console.print(f"report: {path.resolve()}")

    summary = {
        "run_id": options.run_id,
        "report": str(path.resolve()),
        "topic_prefix": run.topic_prefix,
        "redis_prefix": run.redis_prefix,
        "variants": [
            {
                "variant": r.variant,
                "policy": r.policy,
                "impressions": r.impressions,
                "clicks": r.clicks,
                "ctr": r.ctr.as_dict(),
                "uctr": r.uctr.as_dict(),
                "lift": r.lift.as_dict() if r.lift else None,
                "expected_ctr": r.expected_ctr,
                "expected_lift": r.expected_lift.as_dict() if r.expected_lift else None,
                "regret": r.regret if math.isfinite(r.regret) else None,
                "served": r.served,
            }
            for r in rows
        ],
        "verdicts": lines,
        "videos": videos,
        "replay": [
            {"policy": r.policy, "matched": r.matched, "clicks": r.clicks}
            for r in results
        ],
        "traffic": {
            "requests": traffic.requests,
            "shown": len(traffic.shown),
            "clicks_sent": traffic.clicks_sent,
            "clicks_after_run": traffic.clicks_after_run,
            "duplicates_sent": traffic.duplicates_sent,
            "select_errors": traffic.select_errors,
            "event_errors": len(traffic.event_errors),
        },
        "click_params": params,
        "headroom": traffic.headroom,
    }
    (options.out_dir / "summary.json").write_text(
        json.dumps(summary, indent=2, default=str)
    )
    return summary
