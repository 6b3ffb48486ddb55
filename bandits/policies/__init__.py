"""Poster-choosing policies, one module each, and a factory by name.

Examples
--------
>>> import numpy as np
>>> from bandits.state import ArmStats
>>> policy = make_policy("thompson", {"prior_alpha": 1.0, "prior_beta": 1.0})
>>> policy.choose([ArmStats(), ArmStats()], np.random.default_rng(0)).index in (0, 1)
True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bandits.policies._beta import beta_draws
from bandits.policies.base import ArgmaxPolicy, Choice, Policy
from bandits.policies.epsilon import EpsilonGreedy
from bandits.policies.fm_policy import FMPolicy
from bandits.policies.linucb_policy import LinUCBPolicy
from bandits.policies.thompson import ThompsonAllTime, ThompsonSampling
from bandits.policies.ucb import UCB1
from bandits.policies.uniform import UniformRandom

__all__ = [
    "POLICIES",
    "ArgmaxPolicy",
    "Choice",
    "EpsilonGreedy",
    "FMPolicy",
    "LinUCBPolicy",
    "Policy",
    "ThompsonAllTime",
    "ThompsonSampling",
    "UCB1",
    "UniformRandom",
    "beta_draws",
    "make_policy",
]

POLICIES: dict[str, type[Policy]] = {
    cls.name: cls
    for cls in (
        ThompsonSampling,
        ThompsonAllTime,
        UCB1,
        EpsilonGreedy,
        LinUCBPolicy,
        FMPolicy,
        UniformRandom,
    )
}

# Settings field -> constructor argument, per policy.
_SETTINGS_ARGS: dict[str, dict[str, str]] = {
    "thompson": {"prior_alpha": "prior_alpha", "prior_beta": "prior_beta"},
    "thompson_alltime": {"prior_alpha": "prior_alpha", "prior_beta": "prior_beta"},
    "ucb1": {"ucb_c": "c"},
    "epsilon_greedy": {
        "epsilon": "epsilon",
        "prior_alpha": "prior_alpha",
        "prior_beta": "prior_beta",
    },
    "linucb": {"linucb_alpha": "alpha"},
    "fm": {"fm_temperature": "temperature"},
    "random": {},
}


def make_policy(name: str, params: Any = None, **overrides: Any) -> Policy:
    """Build a policy by name from settings-like parameters.

    Parameters
    ----------
    name
        One of ``"thompson"``, ``"thompson_alltime"``, ``"ucb1"``,
        ``"epsilon_greedy"``, ``"linucb"``, ``"fm"``, ``"random"``.
    params
        A :class:`keyart.settings.Settings` (or any object with those
        attributes) or a mapping. Fields read: ``prior_alpha``, ``prior_beta``,
        ``ucb_c``, ``epsilon``, ``linucb_alpha``, ``fm_temperature`` (absent
        ones keep the policy's default); a mapping may also use the
        constructor's own argument names (``c``, ``alpha``, ``temperature``).
    overrides
        Constructor arguments that win over ``params`` (``model=``,
        ``scorer=``, ``use_window=``...).

    Raises
    ------
    ValueError
        For an unknown policy name.

    Examples
    --------
    >>> make_policy("ucb1", {"ucb_c": 0.5}).c
    0.5
    """
    try:
        cls = POLICIES[name]
    except KeyError:
        known = ", ".join(sorted(POLICIES))
        raise ValueError(f"unknown policy {name!r}; known policies: {known}") from None
    kwargs: dict[str, Any] = {}
    for field, arg in _SETTINGS_ARGS[name].items():
        if isinstance(params, Mapping):
            for key in (field, arg):
                if key in params:
                    kwargs[arg] = params[key]
        elif params is not None and hasattr(params, field):
            kwargs[arg] = getattr(params, field)
    kwargs.update(overrides)
    return cls(**kwargs)
