"""Seeded impression and click logs from a hidden click model whose truth is known.

The logs have the columns of the Avro ``impression`` and ``click`` records and
of the poster catalog, so they go through :func:`ranking.dataset.build_training_set`
exactly as logs read from Kafka do. Because the click model is known, a test
can check that a trained ranker recovers the true ordering of posters, and a
benchmark can measure how much a ranker's prior speeds up a bandit.

The hidden model is a logistic model with a poster-quality term, user x poster
interactions (children like saturated posters, phone users dislike text),
a placement bias and a video bias.

Examples
--------
>>> logs = simulate_logs(n_impressions=500, seed=1)
>>> sorted(logs.impressions.columns)[:3]
['context', 'decision_id', 'event_id']
>>> 0.0 < logs.clicks.shape[0] / logs.impressions.shape[0] < 0.3
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = ["CONTEXT_KEYS", "POSTER_KEYS", "HiddenClickModel", "SyntheticLogs"]
__all__ += ["simulate_logs"]

CONTEXT_KEYS = ("age", "kids", "mobile", "taste_action", "taste_drama")
POSTER_KEYS = ("brightness", "faces", "text_area", "saturation", "closeup")
PLACEMENT_BIAS = {"home": 0.0, "trending": -0.3, "search": 0.4}

_QUALITY = np.array([0.8, 0.6, -0.7, 0.4, 0.3])
# Rows: context keys; columns: poster keys.
_INTERACTIONS = np.array(
    [
        [0.0, 0.9, -0.5, 0.0, 0.0],  # age: faces up, text down
        [0.0, 0.0, 0.0, 1.6, 0.0],  # kids: saturated posters
        [0.0, 0.0, -1.4, 0.0, 0.9],  # mobile: no text, close-ups
        [1.0, 0.0, 0.0, 0.0, 0.0],  # action fans: bright posters
        [-0.6, 0.8, 0.0, 0.0, 0.0],  # drama fans: faces, darker
    ]
)


@dataclass(frozen=True)
class HiddenClickModel:
    """The true click probability behind the synthetic logs."""

    intercept: float
    video_bias: Mapping[str, float]
    users: np.ndarray = field(repr=False)

    def logit(
        self,
        context: np.ndarray,
        posters: np.ndarray,
        placement_bias: np.ndarray | float = 0.0,
        video_bias: np.ndarray | float = 0.0,
    ) -> np.ndarray:
        """Row-wise logit for context rows and poster rows of the same length."""
        interaction = np.einsum("ij,jk,ik->i", context, _INTERACTIONS, posters)
        return (
            (self.intercept + posters @ _QUALITY + interaction)
            + placement_bias
            + video_bias
        )

    def click_probability(
        self,
        context: Mapping[str, float],
        poster_features: Mapping[str, float],
        placement: str = "home",
        video_id: str = "",
    ) -> float:
        """True probability that this user clicks this poster here."""
        c = np.array([[context.get(k, 0.0) for k in CONTEXT_KEYS]])
        p = np.array([[poster_features.get(k, 0.0) for k in POSTER_KEYS]])
        z = self.logit(
            c, p, PLACEMENT_BIAS.get(placement, 0.0), self.video_bias.get(video_id, 0.0)
        )
        return float(1.0 / (1.0 + np.exp(-z[0])))

    def population_ctr(
        self, posters: Sequence[Mapping[str, float]], placement: str = "home"
    ) -> np.ndarray:
        """Each poster's click rate averaged over the user population."""
        p = np.array([[f.get(k, 0.0) for k in POSTER_KEYS] for f in posters])
        n_users = len(self.users)
        out = np.empty(len(p))
        for i, row in enumerate(p):
            z = self.logit(
                self.users,
                np.repeat(row[None, :], n_users, axis=0),
                PLACEMENT_BIAS.get(placement, 0.0),
            )
            out[i] = np.mean(1.0 / (1.0 + np.exp(-z)))
        return out

    def new_posters(self, n: int, seed: int) -> list[dict[str, float]]:
        """Feature maps of ``n`` posters the logs never showed."""
        rng = np.random.default_rng(seed)
        return [dict(zip(POSTER_KEYS, row, strict=True)) for row in rng.random((n, 5))]

    def user_contexts(self) -> list[dict[str, float]]:
        return [dict(zip(CONTEXT_KEYS, row, strict=True)) for row in self.users]


@dataclass(frozen=True)
class SyntheticLogs:
    """Impressions, clicks and catalog with the columns of the real ones."""

    impressions: pd.DataFrame
    clicks: pd.DataFrame
    catalog: pd.DataFrame
    truth: HiddenClickModel


def _users(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.column_stack(
        [
            rng.random(n),
            (rng.random(n) < 0.2).astype(float),
            (rng.random(n) < 0.6).astype(float),
            rng.random(n),
            rng.random(n),
        ]
    )


def simulate_logs(
    n_impressions: int = 20_000,
    *,
    n_videos: int = 10,
    posters_per_video: int = 6,
    n_users: int = 500,
    duration_s: float = 2 * 86_400.0,
    start_ms: int = 1_767_225_600_000,
    log_poster_features: bool = True,
    seed: int = 0,
) -> SyntheticLogs:
    """Simulate a uniform-random logging policy over posters that appear in time.

    Half of each video's posters exist from the start; the others are
    published at random times in the first 70% of the period, so the logs hold
    posters without history. Clicks follow their impression after an
    exponential delay (mean 20 s).
    """
    rng = np.random.default_rng(seed)
    users = _users(rng, n_users)
    videos = [f"v{i:03d}" for i in range(n_videos)]
    video_bias = dict(zip(videos, rng.normal(0.0, 0.3, n_videos), strict=True))
    truth = HiddenClickModel(intercept=-3.6, video_bias=video_bias, users=users)

    # Step 1: the catalog, with publish times.
    poster_rows = []
    for video in videos:
        for j in range(posters_per_video):
            late = j >= max(1, posters_per_video // 2)
            published = rng.uniform(0.0, 0.7 * duration_s) if late else 0.0
            poster_rows.append((video, f"{video}-p{j}", published, rng.random(5)))
    catalog = pd.DataFrame(
        {
            "video_id": [r[0] for r in poster_rows],
            "poster_id": [r[1] for r in poster_rows],
            "event_time": [start_ms + int(r[2] * 1000) for r in poster_rows],
            "features": [
                dict(zip(POSTER_KEYS, r[3], strict=True)) for r in poster_rows
            ],
        }
    )
    published_s = np.array([r[2] for r in poster_rows])
    poster_x = np.array([r[3] for r in poster_rows])
    video_index = np.repeat(np.arange(n_videos), posters_per_video)

    # Step 2: impressions, each a live poster of a random video, uniformly.
    t = np.sort(rng.uniform(0.0, duration_s, n_impressions))
    user = rng.integers(0, n_users, n_impressions)
    vid = rng.integers(0, n_videos, n_impressions)
    placement_names = list(PLACEMENT_BIAS)
    place = rng.integers(0, len(placement_names), n_impressions)
    chosen = np.empty(n_impressions, dtype=np.int64)
    propensity = np.empty(n_impressions)
    for i in range(n_impressions):
        live = np.flatnonzero((video_index == vid[i]) & (published_s <= t[i]))
        chosen[i] = rng.choice(live)
        propensity[i] = 1.0 / len(live)

    # Step 3: clicks drawn from the hidden model.
    z = truth.logit(
        users[user],
        poster_x[chosen],
        np.array([PLACEMENT_BIAS[placement_names[k]] for k in place]),
        np.array([video_bias[videos[v]] for v in vid]),
    )
    clicked = rng.random(n_impressions) < 1.0 / (1.0 + np.exp(-z))
    time_ms = start_ms + (t * 1000).astype(np.int64)
    ids = [f"imp-{seed}-{i}" for i in range(n_impressions)]
    impressions = pd.DataFrame(
        {
            "event_id": ids,
            "event_time": time_ms,
            "user_id": [f"u{u}" for u in user],
            "video_id": [videos[v] for v in vid],
            "poster_id": catalog["poster_id"].to_numpy()[chosen],
            "placement": [placement_names[k] for k in place],
            "variant": "",
            "policy": "uniform",
            "propensity": propensity,
            "model_version": 0,
            "decision_id": [f"dec-{seed}-{i}" for i in range(n_impressions)],
            "segment": "",
            "context": [dict(zip(CONTEXT_KEYS, users[u], strict=True)) for u in user],
            "poster_features": [
                dict(zip(POSTER_KEYS, poster_x[c], strict=True))
                if log_poster_features
                else {}
                for c in chosen
            ],
        }
    )
    hit = np.flatnonzero(clicked)
    delay_ms = (rng.exponential(20.0, hit.size) * 1000).astype(np.int64) + 1
    clicks = pd.DataFrame(
        {
            "event_id": [f"clk-{seed}-{i}" for i in hit],
            "event_time": time_ms[hit] + delay_ms,
            "impression_id": [ids[i] for i in hit],
            "user_id": impressions["user_id"].to_numpy()[hit],
            "video_id": impressions["video_id"].to_numpy()[hit],
            "poster_id": impressions["poster_id"].to_numpy()[hit],
            "placement": impressions["placement"].to_numpy()[hit],
        }
    )
    return SyntheticLogs(impressions, clicks, catalog, truth)
