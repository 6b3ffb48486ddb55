"""``keyart report`` and ``keyart evaluate`` on the Open Bandit sample."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.conftest import DATA_CACHE


@pytest.fixture(scope="module")
def run(media: Callable[[str], Path]) -> Callable[..., Any]:
    from keyart.cli import app

    for name in ("obd_random_all.csv", "obd_bts_all.csv"):
        media(name)  # fetched once into the test cache

    def invoke(*args: str) -> Any:
        env = {"KEYART_DATA_CACHE": str(DATA_CACHE), "KEYART_STATE_DIR": "/nonexistent"}
        return CliRunner().invoke(app, list(args), env=env)

    return invoke


def test_report_obd_json(run: Callable[..., Any]) -> None:
    result = run("report", "--source", "obd", "--by", "placement", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert sum(r["impressions"] for r in rows) == 10_000
    assert sum(r["clicks"] for r in rows) == 38
    for row in rows:
        assert row["ctr_low"] <= row["ctr"] <= row["ctr_high"]


def test_report_obd_both_as_an_ab_test(run: Callable[..., Any]) -> None:
    result = run(
        "report",
        "--source",
        "obd",
        "--obd",
        "both",
        "--ab",
        "--control",
        "random",
        "--json",
    )
    assert result.exit_code == 0, result.output
    ab = json.loads(result.stdout)["ab"]
    (row,) = ab["comparisons"]
    assert (row["clicks_a"], row["trials_a"], row["clicks_b"], row["trials_b"]) == (
        38,
        10_000,
        42,
        10_000,
    )
    assert not ab["srm"]["mismatch"]


def test_report_obd_csv_to_stdout(run: Callable[..., Any]) -> None:
    result = run("report", "--source", "obd", "--by", "variant", "--csv", "-")
    assert result.exit_code == 0, result.output
    (row,) = list(csv.DictReader(io.StringIO(result.stdout)))
    assert row["variant"] == "random" and row["clicks"] == "38"


def test_evaluate_obd(run: Callable[..., Any]) -> None:
    result = run("evaluate", "--source", "obd", "--bootstrap", "100", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    seen = payload["observed"]["estimate"]
    assert (payload["train"], payload["evaluated"]) == (5000, 5000)
    for row in payload["estimates"]:
        if row["policy"] == "logging":
            assert row["low"] <= seen <= row["high"], row
    table = run("evaluate", "--source", "obd", "--clip", "20", "--bootstrap", "0")
    assert table.exit_code == 0, table.output
    assert "off-policy estimates" in table.stdout and "epsilon-greedy" in table.stdout
