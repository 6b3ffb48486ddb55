"""Click-through reports and A/B decisions from joined impressions.

The input of every function here is one row per impression with ``clicked``
(0/1), as :func:`bandits.evaluation.logs.load_kafka_logs` or
:func:`bandits.evaluation.logs.load_obd` give it. Functions return DataFrames
and dataclasses; ``keyart report``, the demo and the dashboard print them.

Examples
--------
>>> import pandas as pd
>>> imps = pd.DataFrame({"variant": ["A", "A", "B"], "user_id": ["u1", "u1", "u2"],
...                      "clicked": [1, 0, 0], "event_time": [0, 1, 2]})
>>> variant_table(imps)[["variant", "impressions", "clicks", "users"]].values.tolist()
[['A', 2, 1, 1], ['B', 1, 0, 1]]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bandits.evaluation.ab import (
    DEFAULT_MIXING_SD,
    Guardrail,
    SrmResult,
    compare,
    guardrail_checks,
    msprt_pvalues,
    pairs,
    srm_check,
)
from bandits.evaluation.intervals import (
    Interval,
    ratio_bootstrap,
    ratio_delta,
    uctr,
    wilson,
)

__all__ = [
    "DEFAULT_LIMITS",
    "SLICES",
    "AbReport",
    "ab_report",
    "fallback_rates",
    "placement_table",
    "poster_table",
    "slice_table",
    "time_table",
    "variant_table",
    "video_table",
]

SLICES = ("variant", "placement", "video_id", "poster_id", "policy", "segment")
DEFAULT_LIMITS = {"fallback_rate": 0.05, "latency_p99_ms": 50.0}


def _ctr_interval(
    group: pd.DataFrame, method: str, confidence: float, seed: int
) -> Interval:
    clicks = int(group["clicked"].sum())
    if method == "wilson":
        return wilson(clicks, len(group), confidence)
    per_user = group.groupby("user_id")["clicked"].agg(["sum", "size"])
    y = per_user["sum"].to_numpy(dtype=float)
    x = per_user["size"].to_numpy(dtype=float)
    if method == "delta":
        return ratio_delta(y, x, confidence)
    if method == "bootstrap":
        return ratio_bootstrap(y, x, confidence, seed=seed)
    raise ValueError(f"CTR method must be wilson, delta or bootstrap, got {method!r}")


def slice_table(
    impressions: pd.DataFrame,
    by: Sequence[str] = ("variant",),
    confidence: float = 0.95,
    ctr_method: str = "wilson",
    uctr_method: str = "wilson",
    seed: int = 0,
) -> pd.DataFrame:
    """Impressions, clicks, CTR and UCTR with intervals, per slice.

    ``ctr_method`` is ``wilson`` (impressions independent), ``delta`` or
    ``bootstrap`` (ratio of per-user sums: users independent, a user's
    impressions may correlate). ``uctr_method`` is ``wilson``, ``delta`` or
    ``bootstrap`` over users. Columns: the ``by`` columns, ``impressions``,
    ``clicks``, ``ctr``, ``ctr_low``, ``ctr_high``, ``users``, ``clickers``,
    ``uctr``, ``uctr_low``, ``uctr_high``; rows sorted by the slice.
    """
    by = list(by)
    missing = [c for c in [*by, "clicked", "user_id"] if c not in impressions.columns]
    if missing:
        raise ValueError(
            f"cannot slice by {missing}: impressions have {list(impressions.columns)}"
        )
    rows: list[dict[str, Any]] = []
    groups = impressions.groupby(by, sort=True) if by else [((), impressions)]
    for key, group in groups:
        keys = key if isinstance(key, tuple) else (key,)
        ctr = _ctr_interval(group, ctr_method, confidence, seed)
        users = uctr(
            group["user_id"].to_numpy(),
            group["clicked"].to_numpy(),
            uctr_method,
            confidence,
            seed,
        )
        row: dict[str, Any] = dict(zip(by, keys, strict=True))
        row.update(
            impressions=len(group),
            clicks=int(group["clicked"].sum()),
            ctr=ctr.estimate,
            ctr_low=ctr.low,
            ctr_high=ctr.high,
            users=int(group["user_id"].nunique()),
            clickers=int(group.loc[group["clicked"] > 0, "user_id"].nunique()),
            uctr=users.estimate,
            uctr_low=users.low,
            uctr_high=users.high,
        )
        rows.append(row)
    columns = [*by, "impressions", "clicks", "ctr", "ctr_low", "ctr_high", "users"]
    columns += ["clickers", "uctr", "uctr_low", "uctr_high"]
    return pd.DataFrame(rows, columns=columns)


def variant_table(impressions: pd.DataFrame, **options: Any) -> pd.DataFrame:
    """:func:`slice_table` by variant."""
    return slice_table(impressions, ("variant",), **options)


def placement_table(impressions: pd.DataFrame, **options: Any) -> pd.DataFrame:
    """:func:`slice_table` by placement."""
    return slice_table(impressions, ("placement",), **options)


def video_table(impressions: pd.DataFrame, **options: Any) -> pd.DataFrame:
    """:func:`slice_table` by video."""
    return slice_table(impressions, ("video_id",), **options)


def poster_table(impressions: pd.DataFrame, **options: Any) -> pd.DataFrame:
    """:func:`slice_table` by video and poster."""
    return slice_table(impressions, ("video_id", "poster_id"), **options)


def time_table(
    impressions: pd.DataFrame,
    every_s: float = 60.0,
    by: Sequence[str] = ("variant",),
    confidence: float = 0.95,
) -> pd.DataFrame:
    """CTR with Wilson intervals per time bucket of ``every_s`` seconds.

    Columns: ``bucket_ms`` (bucket start, ms since the epoch), the ``by``
    columns, ``impressions``, ``clicks``, ``ctr``, ``ctr_low``, ``ctr_high``.

    Examples
    --------
    >>> imps = pd.DataFrame({"variant": ["A", "A", "A"], "clicked": [1, 0, 0],
    ...                      "event_time": [0, 30_000, 61_000]})
    >>> time_table(imps)[["bucket_ms", "impressions", "clicks"]].values.tolist()
    [[0, 2, 1], [60000, 1, 0]]
    """
    if every_s <= 0:
        raise ValueError(f"every_s must be positive, got {every_s}")
    width = int(every_s * 1000)
    frame = impressions.assign(bucket_ms=impressions["event_time"] // width * width)
    counts = (
        frame.groupby(["bucket_ms", *by], sort=True)["clicked"]
        .agg(impressions="size", clicks="sum")
        .reset_index()
    )
    intervals = [
        wilson(int(k), int(n), confidence)
        for k, n in zip(counts["clicks"], counts["impressions"], strict=True)
    ]
    counts["ctr"] = [i.estimate for i in intervals]
    counts["ctr_low"] = [i.low for i in intervals]
    counts["ctr_high"] = [i.high for i in intervals]
    return counts


def fallback_rates(decisions: pd.DataFrame) -> dict[str, float]:
    """Share of each variant's decisions served by the fallback path."""
    if decisions is None or not len(decisions) or "fallback" not in decisions:
        return {}
    rates = decisions.groupby("variant")["fallback"].mean()
    return {str(k): float(v) for k, v in rates.items()}


def _looks(
    impressions: pd.DataFrame, a: str, b: str, metric: str, looks: int
) -> tuple[np.ndarray, ...]:
    """Cumulative (clicks, trials) of a and b at ``looks`` evenly spaced times."""
    pair = impressions.loc[impressions["variant"].isin([a, b])]
    if metric == "uctr":
        # A user enters at their first impression and counts as a clicker from
        # their first clicked impression on.
        pair = pair.sort_values("event_time", kind="stable")
        first = pair.drop_duplicates(["variant", "user_id"])
        clicked = pair.loc[pair["clicked"] > 0].drop_duplicates(["variant", "user_id"])
        events = pd.concat(
            [first.assign(trial=1, click=0), clicked.assign(trial=0, click=1)]
        )
    else:
        events = pair.assign(trial=1, click=pair["clicked"].clip(0, 1))
    events = events.sort_values("event_time", kind="stable")
    cuts = np.unique(np.linspace(0, len(events), looks + 1).astype(int)[1:])
    out = []
    for name in (a, b):
        mine = (events["variant"] == name).to_numpy()
        clicks = np.cumsum(events["click"].to_numpy() * mine)
        trials = np.cumsum(events["trial"].to_numpy() * mine)
        out += [clicks[cuts - 1], trials[cuts - 1]]
    return tuple(out)


@dataclass
class AbReport:
    """Pairwise comparisons, the SRM check, guardrails and warnings."""

    comparisons: pd.DataFrame
    srm: SrmResult | None
    guardrails: list[Guardrail]
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON output."""
        return {
            "comparisons": self.comparisons.to_dict("records"),
            "srm": None if self.srm is None else self.srm.__dict__,
            "guardrails": [g.__dict__ for g in self.guardrails],
            "warnings": self.warnings,
            "notes": self.notes,
        }


def ab_report(
    impressions: pd.DataFrame,
    decisions: pd.DataFrame | None = None,
    control: str | None = None,
    metric: str = "ctr",
    expected_share: Mapping[str, float] | None = None,
    latency_p99_ms: Mapping[str, float] | None = None,
    limits: Mapping[str, float] = DEFAULT_LIMITS,
    looks: int = 20,
    mixing_sd: float = DEFAULT_MIXING_SD,
    confidence: float = 0.95,
    seed: int = 0,
) -> AbReport:
    """Compare variants pairwise and check the split and the guardrails.

    ``metric`` is ``ctr`` (unit: impression) or ``uctr`` (unit: user). The
    SRM check counts users, the unit of assignment, against
    ``expected_share`` (equal shares when omitted). With ``expected_share``,
    only its variants are compared; other logged variants are named in a note.
    The always-valid p-value replays the experiment at ``looks`` evenly spaced
    points in time.
    """
    if metric not in ("ctr", "uctr"):
        raise ValueError(f"metric must be ctr or uctr, got {metric!r}")
    logged = sorted(map(str, impressions["variant"].unique()))
    # With a configured split, the experiment is its variants; other traffic
    # in the same topics (replays, earlier experiments) stays out of it.
    variants = [v for v in logged if not expected_share or v in expected_share]
    left_out = sorted(set(logged) - set(variants))
    impressions = impressions.loc[impressions["variant"].astype(str).isin(variants)]
    rows = []
    for a, b in pairs(variants, control):
        counts: list[int] = []
        for name in (a, b):
            mine = impressions.loc[impressions["variant"] == name]
            if metric == "ctr":
                counts += [int(mine["clicked"].sum()), len(mine)]
            else:
                counts += [
                    int(mine.loc[mine["clicked"] > 0, "user_id"].nunique()),
                    int(mine["user_id"].nunique()),
                ]
        ka, na, kb, nb = _looks(impressions, a, b, metric, looks)
        always_valid = float(msprt_pvalues(ka, na, kb, nb, mixing_sd)[-1])
        found = compare(
            a,
            b,
            counts[0],
            counts[1],
            counts[2],
            counts[3],
            metric=metric,
            confidence=confidence,
            seed=seed,
            always_valid_p=always_valid,
        )
        rows.append(found.as_dict())
    comparisons = pd.DataFrame(rows)
    warnings: list[str] = []
    srm = None
    users = {
        str(k): int(v)
        for k, v in impressions.groupby("variant")["user_id"].nunique().items()
    }
    if expected_share:
        # A configured variant that served nobody is the strongest mismatch.
        users = {name: users.get(name, 0) for name in sorted(expected_share)}
    if len(users) >= 2:
        srm = srm_check(users, expected_share)
        if srm.mismatch:
            warnings.append(srm.message())
    metrics: dict[str, dict[str, float]] = {v: {} for v in variants}
    for name, rate in fallback_rates(decisions).items():
        if name in metrics:
            metrics[name]["fallback_rate"] = rate
    for name, value in (latency_p99_ms or {}).items():
        if name in metrics:
            metrics[name]["latency_p99_ms"] = float(value)
    guardrails = guardrail_checks(metrics, limits)
    warnings += [
        f"guardrail {g.name} of {g.variant} is {g.value:.4g} > {g.limit:.4g}"
        for g in guardrails
        if not g.ok
    ]
    notes = [
        "p_value (two-proportion z-test) and prob_b_better (Beta(1,1) posteriors)"
        " hold for one look at a sample size fixed in advance: looking repeatedly"
        " and stopping at the first small value inflates false positives.",
        f"always_valid_p (mSPRT, normal mixing sd {mixing_sd}) may be checked at"
        " every look: stop when it falls below alpha.",
    ]
    if left_out:
        notes.append(f"not in the configured split, left out of the A/B: {left_out}")
    if len(rows) > 1:
        notes.append(
            f"{len(rows)} comparisons: use alpha/{len(rows)} (Bonferroni) per pair."
        )
    if metric == "ctr":
        notes.append(
            "CTR treats impressions as independent; users who see many posters"
            " make its intervals too narrow (use --metric uctr)."
        )
    return AbReport(comparisons, srm, guardrails, warnings, notes)
