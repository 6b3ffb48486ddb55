"""The demo's results: the printed table, the verdicts and the HTML report.

Numbers come from the events in Kafka (impressions joined with their clicks
within the attribution window, by :mod:`bandits.evaluation.logs`), never from
the simulator's own bookkeeping; the simulator only adds what Kafka cannot
know, the oracle's expected click-through rates, from which regret follows.

Intervals are 95%: Wilson for CTR (impressions treated as independent) and
UCTR (users independent). Lifts are ratios of per-user sums with a delta
interval on the log ratio, the user as the unit (a user sees many rows and
stays in one variant). Each lift is given twice: on the clicks in Kafka, and
on the oracle's expected click-through rate of the posters shown, which
judges the same decisions without the noise of whether a click happened. A
policy whose lift interval includes zero is reported as not beating random,
in the table and in the report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from rich.table import Table

from bandits.evaluation.intervals import Interval, lift_clustered, wilson

__all__ = [
    "DemoReport",
    "VariantSummary",
    "compare",
    "render_html",
    "summarize_variants",
    "user_lifts",
    "user_sums",
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
    """CTR over the control's, from the clicks, the user as the unit."""
    regret: float
    """Expected clicks lost against the oracle, summed over impressions."""
    expected_ctr: float
    """The oracle's expected CTR of what was shown (noise-free)."""
    expected_lift: Interval | None = None
    """Expected CTR over the control's, the user as the unit."""
    served: dict[str, float] = field(default_factory=dict)
    """Share of the variant's impressions by the policy that chose them (the
    gateway falls back to another policy when a model is missing)."""
    per_user: pd.DataFrame | None = field(default=None, repr=False)
    """Per user of the variant: ``impressions``, ``clicks``, ``expected``."""

    def lifts_over(self, base: VariantSummary) -> tuple[Interval, Interval]:
        """This variant's lift over ``base``: on clicks, and on expected CTR."""
        if self.per_user is None or base.per_user is None:
            raise ValueError("lifts need both variants' per-user sums")
        return user_lifts(base.per_user, self.per_user)

    @property
    def served_text(self) -> str:
        return ", ".join(f"{p} {100 * s:.0f}%" for p, s in self.served.items())

    @property
    def regret_per_1k(self) -> float:
        return 1000.0 * self.regret / self.impressions if self.impressions else 0.0


def user_sums(joined: pd.DataFrame, by: str) -> dict[str, pd.DataFrame]:
    """Per group of ``by`` (a variant, a policy), per user: ``impressions``,
    ``clicks`` and ``expected`` (the sum of the oracle's expected CTRs).

    ``joined`` has ``user_id``, ``clicked``, ``expected_ctr`` and ``by``.
    """
    return {
        str(name): frame.groupby("user_id").agg(
            impressions=("clicked", "size"),
            clicks=("clicked", "sum"),
            expected=("expected_ctr", "sum"),
        )
        for name, frame in joined.groupby(by)
    }


def user_lifts(base: pd.DataFrame, other: pd.DataFrame) -> tuple[Interval, Interval]:
    """The lift of ``other`` over ``base`` (tables of :func:`user_sums`), on
    clicks and on expected CTR, the user as the unit."""
    n_a, n_b = base["impressions"].to_numpy(), other["impressions"].to_numpy()
    on_clicks = lift_clustered(
        base["clicks"].to_numpy(), n_a, other["clicks"].to_numpy(), n_b
    )
    on_expected = lift_clustered(
        base["expected"].to_numpy(), n_a, other["expected"].to_numpy(), n_b
    )
    return on_clicks, on_expected


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
    joined = impressions[["event_id", "variant", "user_id", "clicked"]].merge(
        shown[["impression_id", "expected_ctr", "best_ctr"]],
        left_on="event_id",
        right_on="impression_id",
        how="left",
    )
    joined["regret"] = joined["best_ctr"] - joined["expected_ctr"]
    per_variant = joined.groupby("variant")[["regret", "expected_ctr"]].agg(
        {"regret": "sum", "expected_ctr": "mean"}
    )
    # An impression the simulator did not record (none should be missing) has
    # no expected rate; the per-user sums leave it out of both sides.
    known = joined.dropna(subset=["expected_ctr"])
    per_user = user_sums(known, "variant")
    served = (
        impressions.groupby("variant")["policy"]
        .value_counts(normalize=True)
        .rename("share")
        .reset_index()
    )
    names = [v for v in variant_to_policy if v in table.index]
    names += sorted(v for v in table.index if v not in names)
    rows = []
    for name in names:
        row = table.loc[name]
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
                lift=None,
                regret=float(per_variant["regret"].get(name, math.nan)),
                expected_ctr=float(per_variant["expected_ctr"].get(name, math.nan)),
                served=shares,
                per_user=per_user.get(name),
            )
        )
    base = next((r for r in rows if r.variant == control), None)
    for row in rows:
        if base is not None and row is not base and row.per_user is not None:
            if base.per_user is not None:
                row.lift, row.expected_lift = row.lifts_over(base)
    return rows


def _pct(value: float, digits: int = 2) -> str:
    return "-" if not math.isfinite(value) else f"{100 * value:.{digits}f}%"


def _interval(iv: Interval | None, digits: int = 2) -> str:
    if iv is None:
        return "-"
    return (
        f"{_pct(iv.estimate, digits)} [{_pct(iv.low, digits)}, {_pct(iv.high, digits)}]"
    )


def _word(lift: Interval, better: str, worse: str, neither: str) -> str:
    if lift.low > 0:
        return better
    return worse if lift.high < 0 else neither


def compare(label: str, other: str, clicks: Interval, expected: Interval) -> str:
    """One sentence: does ``label`` beat ``other``, on clicks and on expected CTR?

    Examples
    --------
    >>> a, b = Interval(0.2, 0.05, 0.4, "x"), Interval(0.1, -0.1, 0.3, "x")
    >>> compare("ts", "random", a, b)  # doctest: +NORMALIZE_WHITESPACE
    'ts beats random on clicks, lift 20.0% [5.0%, 40.0%]; on expected CTR it does
    NOT separate, lift 10.0% [-10.0%, 30.0%].'
    """
    on_clicks = _word(clicks, "beats", "does worse than", "does NOT separate from")
    on_expected = _word(expected, "beats it", "does worse", "does NOT separate")
    return (
        f"{label} {on_clicks} {other} on clicks, lift {_interval(clicks, 1)}; "
        f"on expected CTR it {on_expected}, lift {_interval(expected, 1)}."
    )


def verdicts(rows: Sequence[VariantSummary], control: str = "control") -> list[str]:
    """Whether each variant beats the control, and each contextual policy
    Thompson sampling, by the 95% intervals of the lifts on clicks and on the
    oracle's expected CTR (one sentence each)."""
    out = []
    measured: dict[str, VariantSummary] = {}
    base = next((r for r in rows if r.variant == control), None)
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
        if row.lift is None or row.expected_lift is None or base is None:
            continue
        out.append(compare(label, "random", row.lift, row.expected_lift))
    ts = measured.get("thompson")
    for name in ("linucb", "fm"):
        other = measured.get(name)
        if ts is None or other is None or other.per_user is None:
            continue
        clicks, expected = other.lifts_over(ts)
        out.append(
            compare(f"{other.variant} ({name})", "Thompson sampling", clicks, expected)
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
        "expected lift",
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
            _compact(r.expected_lift, 0),
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
