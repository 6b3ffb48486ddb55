"""``keyart streams`` started where no ``keyart up`` ran before."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from keyart.stack import free_port
from tests.streams.workers import WorkerProcess

pytestmark = pytest.mark.slow


def test_learner_starts_in_a_directory_without_its_state_dir(
    make_settings, tmp_path_factory
):
    # The default state_dir is relative (.keyart), as in the README's setup.
    base = make_settings(topics=True, state_dir=Path(".keyart"))
    settings = base.model_copy(
        update={
            "streams_app_id": f"{base.topic_prefix}-fresh",
            "metrics_port": free_port(0),
        }
    )
    fresh = tmp_path_factory.mktemp("fresh-cwd")
    log = tmp_path_factory.mktemp("fresh-logs") / "streams.log"
    worker = WorkerProcess(settings, log, cwd=fresh)
    try:
        worker.wait_for_log("learner partitions assigned")
    finally:
        worker.stop()
    assert "FileNotFoundError" not in worker.text()
    assert (fresh / ".keyart" / "faust").is_dir()


def test_a_healthy_start_logs_no_warning_about_sensors(make_settings, tmp_path):
    """Faust warned "Missing sensor state for rebalance" at every start."""
    base = make_settings(topics=True)
    settings = base.model_copy(
        update={
            "streams_app_id": f"{base.topic_prefix}-quiet",
            "metrics_port": free_port(0),
        }
    )
    worker = WorkerProcess(settings, tmp_path / "streams.log")
    try:
        worker.wait_for_log("learner partitions assigned")
        time.sleep(2)  # Faust warned in the same millisecond as the assignment
    finally:
        worker.stop()
    text = worker.text()
    assert "learner partitions assigned" in text
    assert "Missing sensor state" not in text
