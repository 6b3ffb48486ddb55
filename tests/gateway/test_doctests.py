"""Every docstring example of the gateway's pure modules runs as written."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = (
    "gateway._errors",
    "gateway._event_time",
    "gateway._arm_counts",
    "gateway.config",
    "gateway.experiments",
    "gateway.placements",
    "gateway.rules",
    "gateway.token",
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0 and result.attempted > 0
