"""The demo's results: the printed table, the verdicts and the HTML report.

Numbers come from the events in Kafka (impressions joined with their clicks
within the attribution window, by :mod:`bandits.evaluation.logs`), never from
the simulator's own bookkeeping; the simulator only adds what Kafka cannot
know, the oracle's expected click-through rates, from which regret follows.

Intervals are 95%: Wilson for CTR (impressions treated as independent) and
UCTR (users independent), a log-ratio delta interval for the lift over the
control. A policy whose lift interval includes zero is reported as not beating
random, in the table and in the report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from rich.table import Table

from bandits.evaluation.intervals import Interval, lift_log_ratio, wilson

__all__ = [
    "DemoReport",
    "VariantSummary",
    "render_html",
    "summarize_variants",
    "variant_rich_table",
    "verdicts",
]


@dataclass
class VariantSummary:
    """One variant's row of the results table."""

    variant: str
    policy: str
    impressions: int
    clicks: int
    ctr: Interval
    users: int
    clickers: int
    uctr: Interval
    lift: Interval | None
    regret: float
    """Expected clicks lost against the oracle, summed over impressions."""
    expected_ctr: float
    """The oracle's expected CTR of what was shown (noise-free)."""
    served: dict[str, float] = field(default_factory=dict)
    """Share of the variant's impressions by the policy that chose them (the
    gateway falls back to another policy when a model is missing)."""

    @property
    def served_text(self) -> str:
        return ", ".join(f"{p} {100 * s:.0f}%" for p, s in self.served.items())

    @property
    def regret_per_1k(self) -> float:
        return 1000.0 * self.regret / self.impressions if self.impressions else 0.0


def summarize_variants(
    impressions: pd.DataFrame,
    shown: pd.DataFrame,
    control: str = "control",
    variant_to_policy: Mapping[str, str] | None = None,
) -> list[VariantSummary]:
    """Rows per variant from joined impressions (Kafka) and the simulator's log.

    ``impressions`` has ``event_id, variant, policy, user_id, clicked``;
    ``shown`` has ``impression_id, expected_ctr, best_ctr``;
    ``variant_to_policy`` the configured split, in display order.
    """
    variant_to_policy = dict(variant_to_policy or {})
    from bandits.evaluation.reports import variant_table

    table = variant_table(impressions).set_index("variant")
    oracle = impressions[["event_id", "variant"]].merge(
        shown[["impression_id", "expected_ctr", "best_ctr"]],
        left_on="event_id",
        right_on="impression_id",
        how="left",
    )
    oracle["regret"] = oracle["best_ctr"] - oracle["expected_ctr"]
    per_variant = oracle.groupby("variant")[["regret", "expected_ctr"]].agg(
        {"regret": "sum", "expected_ctr": "mean"}
    )
    served = (
        impressions.groupby("variant")["policy"]
        .value_counts(normalize=True)
        .rename("share")
        .reset_index()
    )
    names = [v for v in variant_to_policy if v in table.index]
    names += sorted(v for v in table.index if v not in names)
    base = table.loc[control] if control in table.index else None
    rows = []
    for name in names:
        row = table.loc[name]
        lift = None
        if base is not None and name != control:
            lift = lift_log_ratio(
                int(base["clicks"]),
                int(base["impressions"]),
                int(row["clicks"]),
                int(row["impressions"]),
            )
        mine = served[served["variant"] == name]
        shares = {
            str(p): float(x) for p, x in zip(mine["policy"], mine["share"], strict=True)
        }
        rows.append(
            VariantSummary(
                variant=name,
                policy=variant_to_policy.get(name)
                or max(shares, key=lambda p: shares[p]),
                impressions=int(row["impressions"]),
                clicks=int(row["clicks"]),
                ctr=Interval(row["ctr"], row["ctr_low"], row["ctr_high"], "wilson"),
                users=int(row["users"]),
                clickers=int(row["clickers"]),
                uctr=Interval(row["uctr"], row["uctr_low"], row["uctr_high"], "wilson"),
                lift=lift,
                regret=float(per_variant["regret"].get(name, math.nan)),
                expected_ctr=float(per_variant["expected_ctr"].get(name, math.nan)),
                served=shares,
            )
        )
    return rows


def _pct(value: float, digits: int = 2) -> str:
    return "-" if not math.isfinite(value) else f"{100 * value:.{digits}f}%"


def _interval(iv: Interval | None, digits: int = 2) -> str:
    if iv is None:
        return "-"
    return (
        f"{_pct(iv.estimate, digits)} [{_pct(iv.low, digits)}, {_pct(iv.high, digits)}]"
    )


def verdicts(rows: Sequence[VariantSummary], control: str = "control") -> list[str]:
    """One sentence per variant on whether it beats the control (by its lift's
    95% interval), and whether each contextual policy beats Thompson sampling."""
    out = []
    measured: dict[str, VariantSummary] = {}
    for row in rows:
        label = f"{row.variant} ({row.policy})"
        if row.served.get(row.policy, 0.0) < 0.5:
            out.append(
                f"{row.variant} was set to {row.policy}, but the gateway served "
                f"{row.served_text} of its impressions: it had no {row.policy} "
                "model to use, so this row measures the fallback."
            )
            top = max(row.served, key=lambda name: row.served[name])
            label = f"{row.variant} (served as {top})"
        else:
            measured[row.policy] = row
        if row.lift is None:
            continue
        if row.lift.low > 0:
            out.append(f"{label} beats random: lift {_interval(row.lift, 1)}.")
        elif row.lift.high < 0:
            out.append(
                f"{label} does worse than random: lift {_interval(row.lift, 1)}."
            )
        else:
            out.append(
                f"{label} does NOT beat random in this run: "
                f"lift {_interval(row.lift, 1)} includes 0."
            )
    ts = measured.get("thompson")
    for name in ("linucb", "fm"):
        other = measured.get(name)
        if ts is None or other is None:
            continue
        lift = lift_log_ratio(
            ts.clicks, ts.impressions, other.clicks, other.impressions
        )
        word = (
            "beats"
            if lift.low > 0
            else "does worse than"
            if lift.high < 0
            else "does NOT separate from"
        )
        out.append(
            f"{other.variant} ({name}) {word} Thompson sampling: lift "
            f"{_interval(lift, 1)}."
        )
    return out


def _compact(iv: Interval | None, digits: int = 2) -> str:
    if iv is None or not math.isfinite(iv.estimate):
        return "-"
    scale = 100.0
    return (
        f"{scale * iv.estimate:.{digits}f} "
        f"[{scale * iv.low:.{digits}f}, {scale * iv.high:.{digits}f}]"
    )


def variant_rich_table(rows: Sequence[VariantSummary], title: str) -> Table:
    """The printed table: one row per variant (rates in %, 95% intervals)."""
    table = Table(title=title, caption="rates in %, [95% interval]")
    columns = (
        "variant",
        "policy",
        "impr.",
        "clicks",
        "CTR",
        "users",
        "UCTR",
        "lift vs random",
        "regret/1k",
    )
    for name in columns:
        table.add_column(
            name, justify="left" if name in columns[:2] else "right", no_wrap=True
        )
    for r in rows:
        table.add_row(
            r.variant,
            r.policy,
            str(r.impressions),
            str(r.clicks),
            _compact(r.ctr),
            str(r.users),
            _compact(r.uctr, 1),
            _compact(r.lift, 0),
            "-" if not math.isfinite(r.regret) else f"{r.regret_per_1k:.1f}",
        )
    return table


@dataclass
class DemoReport:
    """Everything the HTML report shows."""

    title: str
    summary: list[str]
    rows: list[VariantSummary]
    verdicts: list[str]
    videos: list[dict[str, Any]] = field(default_factory=list)
    """Per video: ``video_id``, ``posters`` (id, image data URI, CTR text,
    impressions), ``share_png`` (traffic share over time)."""
    regret_png: str = ""
    lag_png: str = ""
    ctr_png: str = ""
    replay_png: str = ""
    replay_rows: list[dict[str, Any]] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    parameters: Mapping[str, Any] = field(default_factory=dict)
    limitations: list[str] = field(default_factory=list)


def replay_rows(results: Sequence[Any]) -> list[dict[str, Any]]:
    """Rows of the replay table: matched rounds, clicks, CTR with Wilson 95%."""
    out = []
    for r in results:
        iv = wilson(r.clicks, r.matched) if r.matched else None
        out.append(
            {
                "policy": r.policy,
                "rounds": r.rounds,
                "matched": r.matched,
                "clicks": r.clicks,
                "ctr": _interval(iv, 2),
            }
        )
    return out


def render_html(report: DemoReport, path: Path) -> Path:
    """Write the report with its Jinja2 template; return the path."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=select_autoescape(["html"]),
    )
    env.filters["pct"] = _pct
    env.filters["interval"] = _interval
    html = env.get_template("demo_report.html").render(report=report)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html)
    return path
