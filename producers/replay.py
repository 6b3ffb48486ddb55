"""Replay the Open Bandit Dataset: real logged clicks as keyart events.

The Open Bandit Dataset sample (ZOZOTOWN, uniform-random logging policy) holds
10,000 rounds: a user with four hashed categorical features visits, the logger
shows one of 80 fashion items in one of three positions with propensity 1/80,
and the user clicks or not. Here every item is a poster (an arm) of one slot,
the video ``obd-slot``, and the user features become one-hot context.

Two uses:

* :func:`round_events` turns each logged round into an impression (and a
  click when the log has one) with deterministic event ids, so streaming the
  same log twice is deduplicated downstream;
* :func:`replay_ctr` is the replay method: because the logger chose items
  uniformly at random, the rounds where a policy picks the logged item are an
  unbiased sample of what that policy would have met, and their click rate is
  the policy's click-through rate on these real clicks.

Examples
--------
>>> log = load_obd()  # doctest: +SKIP
>>> len(log.rounds), log.n_items  # doctest: +SKIP
(10000, 80)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from keyart.settings import Settings

__all__ = [
    "OBD_ASSET",
    "OBD_VIDEO",
    "LoggedRound",
    "ObdLog",
    "load_item_features",
    "load_obd",
    "poster_of_item",
    "round_events",
    "stream_log",
]

OBD_ASSET = "obd_random_all.csv"
OBD_ITEMS_ASSET = "obd_item_context.csv"
OBD_VIDEO = "obd-slot"
USER_FEATURES = ("user_feature_0", "user_feature_1", "user_feature_2", "user_feature_3")


def poster_of_item(item_id: int) -> str:
    """The poster id keyart gives an Open Bandit item (``obd-item-07``)."""
    return f"obd-item-{int(item_id):02d}"


@dataclass(frozen=True, slots=True)
class LoggedRound:
    """One logged round: what the uniform-random logger showed and what happened."""

    index: int
    time_ms: int
    item_id: int
    position: int
    click: int
    propensity: float
    context: dict[str, float]
    user_key: str
    """A stable id of the user's feature combination (the log has no user ids)."""


@dataclass
class ObdLog:
    """The loaded log with its context encoding."""

    rounds: list[LoggedRound]
    n_items: int
    feature_names: list[str] = field(default_factory=list)
    source: Path | None = None

    @property
    def clicks(self) -> int:
        return sum(r.click for r in self.rounds)

    def context_matrix(self) -> np.ndarray:
        """Rows of one-hot user features in :attr:`feature_names` order."""
        index = {name: j for j, name in enumerate(self.feature_names)}
        out = np.zeros((len(self.rounds), len(index)))
        for i, item in enumerate(self.rounds):
            for name, value in item.context.items():
                out[i, index[name]] = value
        return out


def load_obd(path: Path | None = None, limit: int | None = None) -> ObdLog:
    """Read the Open Bandit sample (fetched from the ``obp`` wheel when needed).

    Parameters
    ----------
    path
        A CSV in the Open Bandit column layout; the random/all sample by default.
    limit
        Keep only the first ``limit`` rounds (in time order).

    Raises
    ------
    ValueError
        When the file lacks a column the replay needs; the message names it.
    """
    import pandas as pd

    if path is None:
        from keyart.data import fetch

        path = fetch(OBD_ASSET)
    frame = pd.read_csv(path)
    needed = {"timestamp", "item_id", "position", "click", "propensity_score"}
    missing = sorted((needed | set(USER_FEATURES)) - set(frame.columns))
    if missing:
        raise ValueError(f"{path}: Open Bandit log lacks columns {missing}")
    frame = frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
    if limit is not None:
        frame = frame.head(limit)

    # One-hot codes in sorted order of the hashed values, so they are stable.
    codes: dict[str, dict[str, int]] = {
        col: {v: k for k, v in enumerate(sorted(frame[col].astype(str).unique()))}
        for col in USER_FEATURES
    }
    feature_names = [
        f"uf{j}_{k}" for j, col in enumerate(USER_FEATURES) for k in codes[col].values()
    ]
    times = pd.to_datetime(frame["timestamp"], utc=True)
    time_ms = (times.astype("int64") // 1_000_000).to_numpy()
    rounds = []
    for i, row in enumerate(frame.itertuples(index=False)):
        values = [str(getattr(row, col)) for col in USER_FEATURES]
        context = {
            f"uf{j}_{codes[col][v]}": 1.0
            for j, (col, v) in enumerate(zip(USER_FEATURES, values, strict=True))
        }
        user_key = hashlib.sha1("|".join(values).encode()).hexdigest()[:12]  # noqa: S324 - an id, not security
        rounds.append(
            LoggedRound(
                index=i,
                time_ms=int(time_ms[i]),
                item_id=int(row.item_id),
                position=int(row.position),
                click=int(row.click),
                propensity=float(row.propensity_score),
                context=context,
                user_key=user_key,
            )
        )
    n_items = int(frame["item_id"].max()) + 1 if len(frame) else 0
    return ObdLog(rounds, n_items, feature_names, Path(path))


def load_item_features(path: Path | None = None) -> dict[int, dict[str, float]]:
    """Each Open Bandit item's features: ``item_feature_0`` as a number, the
    three hashed categorical features one-hot (``if1_3``, ...).

    Raises
    ------
    ValueError
        When the file lacks ``item_id`` or an ``item_feature_*`` column.
    """
    import pandas as pd

    if path is None:
        from keyart.data import fetch

        path = fetch(OBD_ITEMS_ASSET)
    frame = pd.read_csv(path)
    categorical = ("item_feature_1", "item_feature_2", "item_feature_3")
    missing = sorted({"item_id", "item_feature_0", *categorical} - set(frame.columns))
    if missing:
        raise ValueError(f"{path}: Open Bandit item context lacks columns {missing}")
    codes = {
        col: {v: k for k, v in enumerate(sorted(frame[col].astype(str).unique()))}
        for col in categorical
    }
    out: dict[int, dict[str, float]] = {}
    for row in frame.itertuples(index=False):
        features = {"if0": float(row.item_feature_0)}
        for j, col in enumerate(categorical, start=1):
            features[f"if{j}_{codes[col][str(getattr(row, col))]}"] = 1.0
        out[int(row.item_id)] = features
    return out


def round_events(
    item: LoggedRound,
    *,
    variant: str = "logged",
    policy: str = "uniform-random",
    time_ms: int | None = None,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The impression (and click) events of one logged round, ids deterministic.

    ``time_ms`` replaces the logged time (a replay at replay time); the logged
    time is kept otherwise.

    Examples
    --------
    >>> r = LoggedRound(3, 1_574_553_634_762, 14, 3, 1, 0.0125, {"uf0_1": 1.0}, "u")
    >>> [(kind, rec["event_id"]) for kind, rec in round_events(r)]
    [('impression', 'obd-imp-3'), ('click', 'obd-clk-3')]
    """
    poster = poster_of_item(item.item_id)
    at = item.time_ms if time_ms is None else time_ms
    impression_id = f"obd-imp-{item.index}"
    user_id = f"obd-user-{item.user_key}"
    placement = f"position-{item.position}"
    yield (
        "impression",
        {
            "event_id": impression_id,
            "event_time": at,
            "user_id": user_id,
            "video_id": OBD_VIDEO,
            "poster_id": poster,
            "placement": placement,
            "variant": variant,
            "policy": policy,
            "propensity": item.propensity,
            "decision_id": impression_id,
            "context": item.context,
        },
    )
    if item.click:
        yield (
            "click",
            {
                "event_id": f"obd-clk-{item.index}",
                "event_time": at,
                "impression_id": impression_id,
                "user_id": user_id,
                "video_id": OBD_VIDEO,
                "poster_id": poster,
                "placement": placement,
            },
        )


def stream_log(
    settings: Settings,
    rounds: list[LoggedRound],
    on_progress: Callable[[int], None] | None = None,
    start_ms: int | None = None,
) -> tuple[int, int]:
    """Produce the impression and click events of logged rounds to the broker.

    With ``start_ms`` the rounds are replayed at replay time, 1 ms apart in
    their logged order, rather than at their 2019 times: the learner's
    attribution clock runs on event time, and week-old impressions behind a
    partition's newer events would expire before their clicks are judged.
    Returns the numbers of impressions and clicks sent. The producer is closed
    on return, before anyone stops the broker.
    """
    from producers.events import EventProducer

    producer = EventProducer(settings)
    sent = {"impression": 0, "click": 0}
    for i, item in enumerate(rounds):
        at = None if start_ms is None else start_ms + i
        for kind, record in round_events(item, time_ms=at):
            producer.send(kind, record)
            sent[kind] += 1
        if on_progress is not None and i % 500 == 499:
            on_progress(i + 1)
    producer.flush()
    if on_progress is not None:
        on_progress(len(rounds))
    return sent["impression"], sent["click"]
