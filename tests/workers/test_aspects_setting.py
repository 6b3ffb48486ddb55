"""KEYART_POSTER_ASPECTS: an aspect no crop can have stops the start, named."""

from __future__ import annotations

import pytest

from keyart.settings import SettingsError, load_settings
from workers.pipeline import PipelineConfig


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("0:3", "aspect '0:3' has a zero side"),
        ("2:3,16:0", "aspect '16:0' has a zero side"),
        ("1:20", "aspect '1:20' is beyond 10:1 either way"),
        ("2x3", "String should match pattern"),
        ("", "String should match pattern"),
    ],
)
def test_unusable_aspects_fail_naming_the_variable(monkeypatch, value, reason):
    monkeypatch.setenv("KEYART_POSTER_ASPECTS", value)
    with pytest.raises(SettingsError) as refused:
        load_settings()
    assert "KEYART_POSTER_ASPECTS" in str(refused.value)
    assert reason in str(refused.value)


def test_usable_aspects_reach_the_pipeline(monkeypatch):
    monkeypatch.setenv("KEYART_POSTER_ASPECTS", "2:3,16:9,1:1,10:1")
    config = PipelineConfig.from_settings(load_settings())
    assert config.aspects == ("2:3", "16:9", "1:1", "10:1")
