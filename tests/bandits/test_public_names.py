"""Every bandits module's __all__ names exist, and public names are listed."""

from __future__ import annotations

import importlib

import pytest

MODULES = [
    "bandits.features",
    "bandits.linucb",
    "bandits.window",
    "bandits.fm",
    "bandits.propensity",
    "bandits.retirement",
    "bandits.diversity",
    "bandits.ramp",
    "bandits.policies",
    "bandits.policies.base",
    "bandits.policies.thompson",
    "bandits.policies.ucb",
    "bandits.policies.epsilon",
    "bandits.policies.linucb_policy",
    "bandits.policies.fm_policy",
    "bandits.policies.uniform",
]


@pytest.mark.parametrize("name", MODULES)
def test_all_matches_public_names(name: str) -> None:
    module = importlib.import_module(name)
    for public in module.__all__:
        assert hasattr(module, public), public
    defined_here = {
        n
        for n, v in vars(module).items()
        if not n.startswith("_")
        and getattr(v, "__module__", None) == name
        and callable(v)
    }
    assert defined_here <= set(module.__all__)
