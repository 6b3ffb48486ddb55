"""Held-out evaluation of click models: AUC, log loss and calibration.

Calibration is measured on equal-count bins of the predicted probability
(click rates are low, so equal-width bins would put nearly every impression in
the first one): the reliability table lists each bin's mean prediction beside
its observed click rate, and the expected calibration error (ECE) is their
absolute gap weighted by the bin's share of impressions.

Besides the offline models, the table can hold the online models' scores on
the same held-out impressions, replayed in time order as the stream sees them
(:func:`online_scores`): the arm's Beta posterior mean that Thompson sampling
centres on, and the streaming factorization machine of :mod:`bandits.fm`.

Examples
--------
>>> import numpy as np
>>> y = np.array([0, 0, 1, 1, 0, 1, 0, 0])
>>> p = np.array([0.1, 0.2, 0.8, 0.7, 0.3, 0.6, 0.2, 0.1])
>>> e = evaluate("toy", y, p, bins=2)
>>> round(e.auc, 3), len(e.reliability)
(1.0, 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss, roc_auc_score

__all__ = ["Evaluation", "comparison_table", "evaluate", "online_scores"]
__all__ += ["reliability_rich", "reliability_table"]


@dataclass(frozen=True)
class Evaluation:
    """One model's scores on the held-out period."""

    name: str
    auc: float
    log_loss: float
    ece: float
    mean_prediction: float
    click_rate: float
    impressions: int
    reliability: pd.DataFrame

    def summary(self) -> dict[str, float | int | str]:
        out = asdict(self)
        out.pop("reliability")
        return out


def reliability_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Equal-count bins of ``p``: impressions, mean prediction, observed rate."""
    order = np.argsort(p, kind="stable")
    rows = []
    for part in np.array_split(order, min(bins, len(order))):
        if len(part) == 0:
            continue
        rows.append(
            {
                "low": float(p[part].min()),
                "high": float(p[part].max()),
                "impressions": int(len(part)),
                "mean_prediction": float(p[part].mean()),
                "click_rate": float(y[part].mean()),
            }
        )
    return pd.DataFrame(rows)


def evaluate(name: str, y: np.ndarray, p: np.ndarray, bins: int = 10) -> Evaluation:
    """Score predictions ``p`` of clicks ``y``.

    Raises
    ------
    ValueError
        When the held-out period lacks clicks or misses (AUC is undefined).
    """
    y = np.asarray(y)
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    if len(np.unique(y)) != 2:
        raise ValueError(
            f"{name}: the held-out period needs clicks and misses to be scored"
        )
    table = reliability_table(y, p, bins)
    weights = table["impressions"] / table["impressions"].sum()
    gap = (table["mean_prediction"] - table["click_rate"]).abs()
    return Evaluation(
        name=name,
        auc=float(roc_auc_score(y, p)),
        log_loss=float(log_loss(y, p, labels=[0, 1])),
        ece=float((weights * gap).sum()),
        mean_prediction=float(p.mean()),
        click_rate=float(y.mean()),
        impressions=int(len(y)),
        reliability=table,
    )


def online_scores(
    frame: pd.DataFrame,
    labels: np.ndarray,
    is_held_out: np.ndarray,
    *,
    prior_alpha: float = 1.0,
    prior_beta: float = 1.0,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """The online models' predictions for the held-out rows of a time-ordered log.

    ``frame`` is the whole log in time order (training rows then held-out
    rows, as :class:`ranking.dataset.Split` frames concatenated). Returns:

    ``online beta``
        ``(clicks + alpha) / (impressions + alpha + beta)`` from the arm's
        counts known before the impression: the centre of the Thompson arm.
    ``online fm``
        :class:`bandits.fm.OnlineFM` learning every impression in time order
        and predicting each held-out impression before learning it
        (progressive validation). Present only when :mod:`bandits.fm` imports.
    """
    held = np.asarray(is_held_out, dtype=bool)
    n = frame["poster_impressions"].to_numpy()[held]
    c = frame["poster_clicks"].to_numpy()[held]
    out = {"online beta": (c + prior_alpha) / (n + prior_alpha + prior_beta)}
    try:
        from bandits.fm import OnlineFM, fm_features
    except ImportError:
        return out
    fm = OnlineFM(seed=seed)
    scores = []
    for row, (context, poster, poster_id) in enumerate(
        zip(frame["context"], frame["poster_features"], frame["poster_id"], strict=True)
    ):
        x = fm_features(context, poster, poster_id=str(poster_id))
        if held[row]:
            scores.append(fm.predict_proba_one(x))
        fm.learn_one(x, bool(labels[row]))
    out["online fm"] = np.asarray(scores)
    return out


def comparison_table(evaluations: Sequence[Evaluation], title: str = "") -> object:
    """A rich Table comparing the evaluations, best AUC first."""
    from rich.table import Table

    table = Table(title=title or "held-out period")
    for column in ("model", "AUC", "log loss", "ECE", "mean p", "CTR", "impressions"):
        table.add_column(
            column, justify="left" if column == "model" else "right", no_wrap=True
        )
    for e in sorted(evaluations, key=lambda e: -e.auc):
        table.add_row(
            e.name,
            f"{e.auc:.4f}",
            f"{e.log_loss:.4f}",
            f"{e.ece:.4f}",
            f"{e.mean_prediction:.4f}",
            f"{e.click_rate:.4f}",
            str(e.impressions),
        )
    return table


def reliability_rich(evaluation: Evaluation) -> object:
    """A rich Table of one evaluation's reliability bins."""
    from rich.table import Table

    table = Table(title=f"reliability of {evaluation.name} (equal-count bins)")
    for column in ("predicted range", "impressions", "mean p", "click rate", "gap"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in evaluation.reliability.itertuples():
        table.add_row(
            f"{row.low:.3f}-{row.high:.3f}",
            str(row.impressions),
            f"{row.mean_prediction:.4f}",
            f"{row.click_rate:.4f}",
            f"{row.click_rate - row.mean_prediction:+.4f}",
        )
    return table
