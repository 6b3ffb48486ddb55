"""The demo report's figures, as data URIs a single HTML file can embed."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "ctr_png",
    "image_data_uri",
    "lag_png",
    "png_data_uri",
    "regret_png",
    "replay_png",
    "share_over_time_png",
]


def png_data_uri(figure: Any) -> str:
    """A matplotlib figure as a base64 PNG data URI (the figure is closed)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def image_data_uri(path: Path, height: int = 220) -> str:
    """A poster image as a small JPEG data URI ("" when it cannot be read)."""
    from PIL import Image

    try:
        with Image.open(path) as opened:
            rgb = opened.convert("RGB")
        width = max(1, round(rgb.width * height / rgb.height))
        buffer = io.BytesIO()
        rgb.resize((width, height)).save(buffer, format="JPEG", quality=85)
    except OSError:
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def share_over_time_png(
    impressions: pd.DataFrame, video_id: str, start_ms: int, buckets: int = 12
) -> str:
    """Stacked traffic share of each poster of a video over the run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = impressions[impressions["video_id"] == video_id]
    fig, ax = plt.subplots(figsize=(6.5, 2.8))
    if len(frame):
        t = (frame["event_time"].to_numpy() - start_ms) / 1000.0
        edges = np.linspace(0, max(t.max(), 1.0), buckets + 1)
        posters = sorted(frame["poster_id"].unique())
        counts = np.array(
            [
                np.histogram(t[frame["poster_id"].to_numpy() == p], edges)[0]
                for p in posters
            ],
            dtype=float,
        )
        shares = counts / np.maximum(counts.sum(axis=0), 1)
        centres = (edges[:-1] + edges[1:]) / 2
        # tab20 gives each of up to 20 posters its own colour (the default
        # cycle repeats after 10, and a video easily has more posters).
        colours = plt.get_cmap("tab20").colors
        ax.stackplot(
            centres,
            shares,
            labels=posters,
            colors=[colours[i % len(colours)] for i in range(len(posters))],
        )
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_xlabel("seconds into the run")
    ax.set_ylabel("traffic share")
    ax.set_ylim(0, 1)
    ax.set_title(f"{video_id}: share of impressions per poster (all variants)")
    return png_data_uri(fig)


def regret_png(shown: pd.DataFrame) -> str:
    """Cumulative expected regret per policy against seconds into the run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    for (variant, policy), group in shown.groupby(["variant", "policy"]):
        group = group.sort_values("t_s")
        ax.plot(group["t_s"], group["regret"].cumsum(), label=f"{variant} ({policy})")
    ax.set_xlabel("seconds into the run")
    ax.set_ylabel("cumulative regret (expected clicks lost)")
    ax.set_title("Regret against the simulator's oracle")
    ax.legend(fontsize=8)
    return png_data_uri(fig)


def ctr_png(rows: Sequence[Any]) -> str:
    """CTR per variant with its 95% interval, and the oracle's expected CTR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.0))
    x = np.arange(len(rows))
    est = np.array([r.ctr.estimate for r in rows]) * 100
    low = est - np.array([r.ctr.low for r in rows]) * 100
    high = np.array([r.ctr.high for r in rows]) * 100 - est
    ax.bar(x, est, yerr=[low, high], capsize=6, color="#4c72b0", label="measured CTR")
    ax.scatter(
        x,
        [r.expected_ctr * 100 for r in rows],
        color="#dd8452",
        zorder=3,
        label="oracle's expected CTR of what was shown",
    )
    ax.set_xticks(x, [f"{r.variant}\n({r.policy})" for r in rows])
    ax.set_ylabel("CTR (%)")
    ax.set_title("Click-through rate per variant, 95% Wilson intervals")
    ax.set_ylim(0, max([*(est + high), 1.0]) * 1.35)  # room for the legend
    ax.legend(fontsize=8, loc="upper left", ncols=2)
    return png_data_uri(fig)


def lag_png(
    samples: Sequence[tuple[float, int, float]], traffic_end_s: float | None = None
) -> str:
    """The learner's consumer lag (messages and seconds) over the run; a line
    marks where the simulated traffic ends and the Open Bandit log starts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 2.8))
    if samples:
        t, messages, seconds = zip(*samples, strict=True)
        ax.plot(t, messages, color="#4c72b0", label="messages")
        ax.set_ylabel("lag (messages)")
        right = ax.twinx()
        right.plot(t, seconds, color="#c44e52", label="seconds", linestyle="--")
        right.set_ylabel("age of oldest unprocessed event (s)")
        lines = ax.get_lines() + right.get_lines()
        ax.legend(lines, [line.get_label() for line in lines], fontsize=7)
    if traffic_end_s is not None:
        ax.axvline(traffic_end_s, color="#555", linewidth=0.8)
        ax.annotate(  # left of the line, so the right axis never clips it
            "traffic ends; Open Bandit log streamed ",
            (traffic_end_s, 0.92),
            xycoords=("data", "axes fraction"),
            fontsize=7,
            ha="right",
        )
    ax.set_xlabel("seconds into the run")
    ax.set_title("Learner consumer lag on impressions and clicks")
    return png_data_uri(fig)


def replay_png(
    curves: Mapping[str, Sequence[tuple[int, int, int]]], rounds: int
) -> str:
    """Cumulative matched clicks of each replayed policy along the log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 2.8))
    for name, curve in curves.items():
        if curve:
            index, matched, clicks = zip(*curve, strict=True)
            ax.step(
                index, clicks, where="post", label=f"{name} ({matched[-1]} matched)"
            )
    ax.set_xlim(0, rounds)
    ax.set_xlabel("logged round")
    ax.set_ylabel("clicks on matched rounds")
    ax.set_title("Open Bandit replay: real clicks each policy would have earned")
    ax.legend(fontsize=8)
    return png_data_uri(fig)
