"""Every docstring example in the bandits package runs and prints what it says."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import bandits

# The evaluation package and the CLI have their own tests.
OTHERS = ("bandits.evaluation", "bandits.cli")
MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(bandits.__path__, prefix="bandits.")
    if not m.name.startswith(OTHERS)
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
