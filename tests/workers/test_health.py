"""``keyart posters worker`` serves /metrics, /healthz and /readyz while it works."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from keyart.stack import free_port
from producers.events import EventProducer
from tests.conftest import ROOT
from tests.helpers import poster_worker_env
from workers.runner import video_event

pytestmark = pytest.mark.slow


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError:
        return 0, ""


def samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_worker_process_serves_metrics_and_health(make_settings, media):
    settings = make_settings(topics=True, poster_session_timeout_s=6)
    port = free_port(0)
    env = poster_worker_env(
        settings,
        KEYART_POSTER_SESSION_TIMEOUT_S="6",
        KEYART_POSTER_GROUP_ID="health-" + settings.topic_prefix,
        KEYART_METRICS_PORT=str(port),
    )
    producer = EventProducer(settings)
    producer.send("video_published", video_event(media("astronaut.png"), "astro"))
    producer.send(
        "video_published", {**video_event(media("astronaut.png")), "video_id": ""}
    )
    producer.flush()
    command = [sys.executable, "-m", "keyart.cli", "posters", "worker"]
    process = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wanted = {
            'keyart_posters_jobs_total{outcome="done"}': 1.0,
            'keyart_posters_jobs_total{outcome="dead_letter"}': 1.0,
            'keyart_posters_dead_letters_total{reason="invalid"}': 1.0,
            "keyart_posters_candidates_total": 6.0,
            "keyart_posters_frames_total": 1.0,
            "keyart_posters_job_seconds_count": 1.0,
        }
        seen: dict[str, float] = {}
        deadline = time.monotonic() + 180  # a loaded machine starts Python slowly
        while time.monotonic() < deadline and process.poll() is None:
            status, body = get(base + "/metrics")
            if status == 200:
                seen = samples(body)
                if all(seen.get(k) == v for k, v in wanted.items()):
                    break
            time.sleep(0.5)
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        assert {k: seen.get(k) for k in wanted} == wanted
        assert seen["keyart_posters_unrecorded_total"] == 0.0

        status, body = get(base + "/healthz")
        assert (status, json.loads(body)) == (
            200,
            {"alive": True, "process": "posters"},
        )
        status, body = get(base + "/readyz")
        report = json.loads(body)
        assert status == 200 and report["ready"] is True, body
        assert set(report["checks"]) == {"broker", "database"}
        assert "KEYART" not in body  # nothing failing, no setting blamed

        promtool = shutil.which("promtool")
        assert promtool, "promtool is missing (apt-get install -y prometheus)"
        _, text = get(base + "/metrics")
        checked = subprocess.run(
            [promtool, "check", "metrics"], input=text.encode(), capture_output=True
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err.decode()[-3000:]
    assert json.loads(out.decode().strip().splitlines()[-1]) == {
        "done": 1,
        "dead_letter": 1,
    }
    assert get(base + "/healthz")[0] == 0  # the port is released on exit


def test_worker_without_broker_logs_its_consumer_failures_once_a_minute(
    make_settings, tmp_path
):
    """Its consumer wrote about 200 raw librdkafka lines in 12 s while the
    broker was down; they take keyart's format, each once a minute."""
    settings = make_settings()
    port = free_port(0)
    env = poster_worker_env(
        settings,
        KEYART_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port(0)}",
        KEYART_METRICS_PORT=str(port),
    )
    log = tmp_path / "worker.log"
    command = [sys.executable, "-m", "keyart.cli", "posters", "worker"]
    with log.open("w") as out:
        process = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while get(f"http://127.0.0.1:{port}/healthz")[0] != 200:
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the worker did not start"
            time.sleep(0.2)
        assert get(f"http://127.0.0.1:{port}/readyz")[0] == 503
        time.sleep(8)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    lines = log.read_text().splitlines()
    assert not [line for line in lines if "#consumer-" in line and "%" in line[:1]]
    told = [line for line in lines if "workers.kafka: FAIL" in line]
    assert told, lines[-20:]  # the failure is still told
    assert len(told) <= 2, told  # the bootstrap address, perhaps once more
