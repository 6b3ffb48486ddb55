"""Logged bandit feedback in the shape every off-policy estimator reads.

One row is one logged decision: the action (poster) the logging policy took,
the probability it had of taking it (its propensity), the reward (a click), the
candidate actions it chose among, and context features. Candidates are kept
as (row, action) pairs so that rows may have different candidate sets (a
video's posters) without an n x K matrix.

Examples
--------
>>> import pandas as pd
>>> frame = pd.DataFrame({"action": ["a", "b"], "reward": [1, 0],
...                       "propensity": [0.5, 0.5]})
>>> log = LoggedBandit.from_frame(frame, candidates=["a", "b"])
>>> log.n, log.pair_row.tolist(), log.pair_action.tolist()
(2, [0, 0, 1, 1], [0, 1, 0, 1])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = ["LoggedBandit", "impressions_to_bandit"]


@dataclass(frozen=True)
class LoggedBandit:
    """Logged decisions with propensities, rewards and candidate sets.

    Attributes
    ----------
    actions
        Action codes (index into ``action_names``) of the logged actions, (n,).
    rewards, propensities
        Reward and logging propensity of each row, (n,).
    action_names
        Name of each action code, (K,).
    pair_row, pair_action
        Candidate pairs, grouped by row in row order, (m,).
    logged_pair
        Index into the pairs of each row's logged action, (n,).
    contexts
        Context features, one row per logged decision (may have no columns).
    """

    actions: np.ndarray
    rewards: np.ndarray
    propensities: np.ndarray
    action_names: np.ndarray
    pair_row: np.ndarray
    pair_action: np.ndarray
    logged_pair: np.ndarray
    contexts: pd.DataFrame = field(default_factory=pd.DataFrame)
    name: str = "log"

    @property
    def n(self) -> int:
        """Number of logged decisions."""
        return int(self.actions.size)

    @property
    def n_actions(self) -> int:
        """Number of distinct actions known to the log."""
        return int(self.action_names.size)

    def candidate_counts(self) -> np.ndarray:
        """Number of candidates of each row."""
        return np.bincount(self.pair_row, minlength=self.n)

    @classmethod
    def from_arrays(
        cls,
        actions: np.ndarray,
        rewards: np.ndarray,
        propensities: np.ndarray,
        n_actions: int,
        contexts: pd.DataFrame | None = None,
        name: str = "log",
    ) -> LoggedBandit:
        """A log where every row's candidates are all ``n_actions`` actions.

        Examples
        --------
        >>> log = LoggedBandit.from_arrays(np.array([1]), np.array([0.0]),
        ...                                np.array([0.5]), 2)
        >>> log.logged_pair.tolist()
        [1]
        """
        actions = np.asarray(actions, dtype=np.int64)
        n = actions.size
        if actions.size and (actions.min() < 0 or actions.max() >= n_actions):
            raise ValueError(f"action codes must lie in [0, {n_actions})")
        log = cls(
            actions=actions,
            rewards=np.asarray(rewards, dtype=float),
            propensities=np.asarray(propensities, dtype=float),
            action_names=np.array([str(a) for a in range(n_actions)], dtype=object),
            pair_row=np.repeat(np.arange(n), n_actions),
            pair_action=np.tile(np.arange(n_actions), n),
            logged_pair=np.arange(n) * n_actions + actions,
            contexts=contexts if contexts is not None else pd.DataFrame(index=range(n)),
            name=name,
        )
        log.validate()
        return log

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        candidates: Sequence[str] | None = None,
        context_columns: Sequence[str] = (),
        name: str = "log",
    ) -> LoggedBandit:
        """Build from a DataFrame with ``action``, ``reward`` and ``propensity``.

        Candidates come from ``candidates`` (the same for every row) or else
        from a ``candidates`` column holding each row's list. A logged action
        missing from its row's candidates is added to them.
        """
        missing = {"action", "reward", "propensity"} - set(frame.columns)
        if missing:
            raise ValueError(f"logged feedback lacks columns {sorted(missing)}")
        frame = frame.reset_index(drop=True)
        logged = frame["action"].astype(str).to_numpy()
        if candidates is not None:
            names = np.array(sorted(set(map(str, candidates)) | set(logged)), object)
            code = {a: i for i, a in enumerate(names)}
            shared = np.array([code[str(a)] for a in candidates], dtype=np.int64)
            per_row = [shared] * len(frame)
        elif "candidates" in frame.columns:
            lists = [
                [str(a) for a in (c if len(c) else [x])]
                for c, x in zip(frame["candidates"], logged, strict=True)
            ]
            names = np.array(
                sorted({a for c in lists for a in c} | set(logged)), dtype=object
            )
            code = {a: i for i, a in enumerate(names)}
            per_row = [np.array([code[a] for a in c], dtype=np.int64) for c in lists]
        else:
            raise ValueError("give candidates or a 'candidates' column")
        actions = np.array([code[a] for a in logged], dtype=np.int64)
        per_row = [
            row if (row == a).any() else np.append(row, a)
            for row, a in zip(per_row, actions, strict=True)
        ]
        lengths = np.array([len(r) for r in per_row], dtype=np.int64)
        pair_action = np.concatenate(per_row) if per_row else np.empty(0, np.int64)
        pair_row = np.repeat(np.arange(len(frame)), lengths)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        position = np.array(
            [
                int(np.flatnonzero(r == a)[0])
                for r, a in zip(per_row, actions, strict=True)
            ],
            dtype=np.int64,
        )
        log = cls(
            actions=actions,
            rewards=frame["reward"].to_numpy(dtype=float),
            propensities=frame["propensity"].to_numpy(dtype=float),
            action_names=names,
            pair_row=pair_row,
            pair_action=pair_action,
            logged_pair=starts[: len(frame)] + position if len(frame) else position,
            contexts=frame[list(context_columns)].reset_index(drop=True),
            name=name,
        )
        log.validate()
        return log

    def validate(self) -> None:
        """Raise ValueError when propensities or rewards cannot be used."""
        p = self.propensities
        bad = ~np.isfinite(p) | (p <= 0) | (p > 1)
        if bad.any():
            raise ValueError(
                f"{int(bad.sum())} of {self.n} rows have a propensity outside (0, 1]"
                f" (first: {p[bad][0]!r}); inverse propensity weights need it"
            )
        if not np.isfinite(self.rewards).all():
            raise ValueError("rewards must be finite numbers")

    def subset(self, mask: np.ndarray, name: str | None = None) -> LoggedBandit:
        """The rows where ``mask`` is true, with their candidates."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (self.n,):
            raise ValueError(f"mask must have shape ({self.n},)")
        new_index = np.cumsum(mask) - 1
        keep_pairs = mask[self.pair_row]
        pair_new = np.cumsum(keep_pairs) - 1
        return LoggedBandit(
            actions=self.actions[mask],
            rewards=self.rewards[mask],
            propensities=self.propensities[mask],
            action_names=self.action_names,
            pair_row=new_index[self.pair_row[keep_pairs]],
            pair_action=self.pair_action[keep_pairs],
            logged_pair=pair_new[self.logged_pair[mask]],
            contexts=self.contexts.loc[mask].reset_index(drop=True),
            name=name or self.name,
        )

    def row_sum(self, pair_values: np.ndarray) -> np.ndarray:
        """Sum per row of a value given for each candidate pair."""
        return np.bincount(self.pair_row, weights=pair_values, minlength=self.n)


def impressions_to_bandit(
    impressions: pd.DataFrame,
    decisions: pd.DataFrame | None = None,
    candidates: Sequence[str] | None = None,
    name: str = "log",
) -> LoggedBandit:
    """Logged feedback from joined impressions (one row each, with ``clicked``).

    The action is the poster, the reward ``clicked``. Each row's candidates are,
    in order of preference: ``candidates`` when given (the same for all rows),
    the candidate list of its decision (matched by ``decision_id``), or every
    poster the log shows for its video. Context features are the placement, the
    segment, the ``user_feature_*`` columns and each key of the ``context``
    map (missing keys read as 0).
    """
    frame = pd.DataFrame(
        {
            "action": impressions["poster_id"].astype(str).to_numpy(),
            "reward": impressions["clicked"].to_numpy(dtype=float),
            "propensity": impressions["propensity"].to_numpy(dtype=float),
        }
    )
    context = pd.DataFrame(index=range(len(impressions)))
    for column in ("placement", "segment"):
        if column in impressions.columns:
            context[column] = impressions[column].astype(str).to_numpy()
    for column in impressions.columns:
        if column.startswith("user_feature"):
            context[column] = impressions[column].astype(str).to_numpy()
    if "context" in impressions.columns:
        maps = pd.DataFrame.from_records(
            [m if isinstance(m, dict) else {} for m in impressions["context"]]
        )
        for key in maps.columns:
            context["ctx." + str(key)] = maps[key].fillna(0.0).to_numpy(dtype=float)
    frame = pd.concat([frame, context], axis=1)
    if candidates is None:
        by_video = impressions.groupby("video_id")["poster_id"].agg(
            lambda s: sorted(set(map(str, s)))
        )
        lists = impressions["video_id"].map(by_video)
        if decisions is not None and len(decisions) and "candidates" in decisions:
            by_decision = decisions.drop_duplicates("event_id").set_index("event_id")[
                "candidates"
            ]
            logged = impressions["decision_id"].map(by_decision)
            lists = [
                list(c) if isinstance(c, (list, tuple, np.ndarray)) and len(c) else v
                for c, v in zip(logged, lists, strict=True)
            ]
        frame["candidates"] = list(lists)
    return LoggedBandit.from_frame(
        frame, candidates=candidates, context_columns=list(context.columns), name=name
    )
