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

from bandits.features import cross_features_many
from bandits.fm import fm_features
from bandits.policies import Policy, make_policy
from bandits.policies.base import check_counts
from bandits.state import ArmStats
from gateway.state import PosterMeta
from keyart.keys import Keys
from keyart.settings import Settings

__all__ = ["ModelCache", "PolicyBook"]

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
        """Check both versions (one round trip) and reload what changed."""
        from bandits.fm import FMScorer
        from bandits.linucb import LinUCB

        async with redis.pipeline(transaction=False) as pipe:
            pipe.hget(self.keys.model("linucb"), "version")
            pipe.hget(self.keys.model("fm"), "version")
            linucb_version, fm_version = await pipe.execute()
        self.checked_at = time.monotonic()
        if linucb_version is not None and int(linucb_version) != self.linucb_version:
            raw = await redis.hgetall(self.keys.model("linucb"))
            try:
                self.linucb = LinUCB.from_mapping(raw)
                self.linucb_version = int(linucb_version)
            except ValueError:
                logger.exception("cannot read the LinUCB model; keeping the old one")
        if fm_version is not None and int(fm_version) != self.fm_version:
            raw = await redis.hget(self.keys.model("fm"), "data")
            try:
                self.fm = FMScorer.from_export(orjson.loads(raw or b"{}"))
                self.fm_version = int(fm_version)
            except ValueError:
                logger.exception("cannot read the FM model; keeping the old one")


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
    ) -> Any:
        """The ``X`` a contextual policy needs (None for the others)."""
        if name == "linucb":
            dim = policy.model.dim  # type: ignore[attr-defined]
            return cross_features_many(context, [p.features for p in posters], dim)
        if name == "fm":
            return [
                fm_features(context, p.features, poster_id=p.poster_id) for p in posters
            ]
        return None

    def reference(
        self, name: str, policy: Policy, stats: Sequence[ArmStats], X: Any
    ) -> np.ndarray:
        """Each candidate's expected score, the scale rule multipliers act on.

        The posterior-mean click-through rate for the count-based policies,
        the policy's own (deterministic) score for LinUCB and the FM.
        """
        if name in ("linucb", "fm"):
            return np.abs(np.asarray(policy.scores(stats, X), dtype=np.float64))  # type: ignore[attr-defined]
        s = self.settings
        n, c = check_counts(stats, use_window=name != "thompson_alltime")
        return (c + s.prior_alpha) / (n + s.prior_alpha + s.prior_beta)
