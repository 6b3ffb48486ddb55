"""Every docstring example of the evaluation package and its CLI runs."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import bandits.evaluation

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(
        bandits.evaluation.__path__, prefix="bandits.evaluation."
    )
) + ["bandits.cli"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_public_names_are_exported() -> None:
    for name in MODULES:
        module = importlib.import_module(name)
        for public in module.__all__:
            assert hasattr(module, public), f"{name}.{public}"
