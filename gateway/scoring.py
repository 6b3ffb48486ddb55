"""The policies the gateway serves, fed with the learner's live models.

Policies are the shared ones of :mod:`bandits.policies`. The models behind
LinUCB and the factorization machine are the learner's, read from Redis by
:class:`ModelCache` only when their version moves, never per request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from bandits.features import cross_features_checked, cross_features_many
from bandits.fm import fm_features
from bandits.policies import Policy, make_policy
from gateway.state import PosterMeta
from keyart.keys import Keys
from keyart.settings import Settings

__all__ = ["ModelCache", "PolicyBook", "posterior_counts"]

logger = logging.getLogger("gateway")


class ModelCache:
    """The learner's LinUCB and FM models, re-read when their version moves."""

    def __init__(self, keys: Keys, settings: Settings) -> None:
        self.keys = keys
        self.settings = settings
        self.linucb: Any = None
        self.linucb_version = 0
        self.fm: Any = None
        self.fm_version = 0
        self.checked_at = 0.0

    async def refresh(self, redis: Any) -> None:
        """Check both versions (one round trip) and reload what changed.

        A model's version is its ``updated_ms`` field when the learner writes
        one (the merged LinUCB does), else its ``version`` field.
        """
        from bandits.fm import scorer_from_export
        from bandits.linucb import LinUCB

        async with redis.pipeline(transaction=False) as pipe:
            pipe.hmget(self.keys.model("linucb"), "updated_ms", "version")
            pipe.hmget(self.keys.model("fm"), "updated_ms", "version")
            linucb_stamp, fm_stamp = (_stamp(r) for r in await pipe.execute())
        self.checked_at = time.monotonic()
        if linucb_stamp and linucb_stamp != self.linucb_version:
            raw = await redis.hgetall(self.keys.model("linucb"))
            try:
                self.linucb = LinUCB.from_mapping(raw)
                self.linucb_version = linucb_stamp
            except ValueError:
                logger.exception("cannot read the LinUCB model; keeping the old one")
        if fm_stamp and fm_stamp != self.fm_version:
            raw = await redis.hget(self.keys.model("fm"), "data")
            try:
                self.fm = scorer_from_export(orjson.loads(raw or b"{}"))
                self.fm_version = fm_stamp
            except ValueError:
                logger.exception("cannot read the FM model; keeping the old one")


def _stamp(fields: list[bytes | None]) -> int:
    for value in fields:
        if value:
            return int(value)
    return 0


class PolicyBook:
    """The policies of every experiment variant, built once per model version.

    Parameters
    ----------
    settings
        Priors, exploration constants and the number of propensity draws.
    models
        The shared model cache.
    """

    def __init__(self, settings: Settings, models: ModelCache) -> None:
        self.settings = settings
        self.models = models
        self._policies: dict[str, tuple[int, Policy]] = {}

    def get(self, name: str) -> tuple[str, Policy, int]:
        """``(name used, policy, model version)`` for a variant's policy name.

        The factorization machine serves as Thompson sampling until the
        learner publishes a first model.
        """
        if name == "fm" and self.models.fm is None:
            name = "thompson"
        version = {"linucb": self.models.linucb_version, "fm": self.models.fm_version}
        current = version.get(name, 0)
        cached = self._policies.get(name)
        if cached is not None and cached[0] == current:
            return name, cached[1], current
        overrides: dict[str, Any] = {}
        if name in ("thompson", "thompson_alltime"):
            overrides["n_propensity"] = self.settings.propensity_samples
        elif name == "linucb" and self.models.linucb is not None:
            overrides["model"] = self.models.linucb
        elif name == "fm":
            overrides["scorer"] = self.models.fm
        policy = make_policy(name, self.settings, **overrides)
        self._policies[name] = (current, policy)
        return name, policy, current

    def features(
        self,
        name: str,
        policy: Policy,
        posters: Sequence[PosterMeta],
        context: dict[str, float],
        checked: Sequence[tuple[tuple[str, ...], list[float]]] | None = None,
    ) -> Any:
        """The ``X`` a contextual policy needs (None for the others).

        ``checked`` may hold the posters' features already checked
        (:func:`bandits.features.checked_poster_features`), kept by the caller
        so that LinUCB does not check them on every request.
        """
        if name == "linucb":
            dim = policy.model.dim  # type: ignore[attr-defined]
            if checked is not None:
                return cross_features_checked(context, checked, dim)
            return cross_features_many(context, [p.features for p in posters], dim)
        if name == "fm":
            return [
                fm_features(context, p.features, poster_id=p.poster_id) for p in posters
            ]
        return None

    def reference_counts(
        self, name: str, policy: Policy, counts: np.ndarray, X: Any
    ) -> np.ndarray:
        """Each candidate's expected score, the scale rule multipliers act on.

        ``counts`` is ``(k, 4)``: impressions, clicks, window impressions,
        window clicks. The expected score is the posterior-mean click-through
        rate for the count-based policies (all-time counts for
        ``thompson_alltime``, window counts otherwise) and the policy's own
        deterministic score for LinUCB and the FM.
        """
        if name in ("linucb", "fm"):
            scores = policy.scores(None, X)  # type: ignore[attr-defined]
            return np.abs(np.asarray(scores, dtype=np.float64))
        n, c = posterior_counts(name, counts)
        s = self.settings
        return (c + s.prior_alpha) / (n + s.prior_alpha + s.prior_beta)


def posterior_counts(name: str, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Impressions and clicks (clicks clamped to impressions) a policy uses."""
    if name == "thompson_alltime":
        n, c = counts[:, 0], counts[:, 1]
    else:
        n, c = counts[:, 2], counts[:, 3]
    return n, np.minimum(c, n)
