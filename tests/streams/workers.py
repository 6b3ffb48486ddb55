"""Run real ``keyart streams`` worker processes and generate event streams."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from keyart.settings import Settings

BASE_MS = 1_700_000_000_000
ENV_FIELDS = (
    "kafka_bootstrap",
    "redis_url",
    "redis_prefix",
    "topic_prefix",
    "topic_partitions",
    "streams_app_id",
    "state_dir",
    "window_kind",
    "window_s",
    "window_buckets",
    "attribution_window_s",
    "dedupe_window_s",
    "flush_interval_ms",
    "metrics_port",
    "streams_session_timeout_s",
    "fm_sample_rate",
)


class WorkerProcess:
    """One ``keyart streams`` process with its log file, run in ``cwd`` (the
    repository by default)."""

    def __init__(self, settings: Settings, log: Path, cwd: Path | None = None) -> None:
        root = Path(__file__).resolve().parents[2]
        env = dict(os.environ)
        for name in ENV_FIELDS:
            env[f"KEYART_{name.upper()}"] = str(getattr(settings, name))
        env["KEYART_LOG_LEVEL"] = "INFO"
        # This checkout's code, whatever the working directory.
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(root), os.environ.get("PYTHONPATH")])
        )
        self.log = log
        self._log_file = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "keyart.cli", "streams"],
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=cwd or root,
            start_new_session=True,
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout: float = 90.0, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.text().count(needle) >= count:
                return
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.text()[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"no {needle!r} in {timeout} s:\n{self.text()[-3000:]}")

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self._log_file.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self._log_file.close()


def event_stream(
    seed: int,
    impressions: int,
    videos: int = 24,
    posters: int = 4,
    window_ms: int = 600_000,
) -> tuple[list[tuple[str, dict[str, Any]]], dict[tuple[str, str], list[int]]]:
    """A seeded stream of impressions and clicks, with its expected counts.

    The stream holds repeated impression and click ids, clicks sent before
    their impression, clicks after the attribution window, repeat clicks and
    clicks whose impression never comes. Returns the ``(kind, record)`` list in
    send order and ``(video, poster) -> [impressions, clicks]``, the all-time
    counts the learner must end with.
    """
    rng = random.Random(seed)
    sends: list[tuple[float, str, dict[str, Any]]] = []
    expected: dict[tuple[str, str], list[int]] = {}
    for i in range(impressions):
        video, poster = f"v{rng.randrange(videos)}", f"p{rng.randrange(posters)}"
        t = BASE_MS + i * 30
        imp = {
            "event_id": f"i{i}",
            "event_time": t,
            "user_id": f"u{rng.randrange(500)}",
            "video_id": video,
            "poster_id": poster,
            "placement": "row",
            "context": {"age": rng.choice([0.25, 0.5, 0.75]), "night": 1.0},
            "poster_features": {"dark": int(poster[1:]) / 4},
        }
        counts = expected.setdefault((video, poster), [0, 0])
        counts[0] += 1
        sends.append((t, "impression", imp))
        if rng.random() < 0.05:
            sends.append((t + rng.randrange(1, 5000), "impression", imp))  # repeat
        roll = rng.random()
        click = {
            "event_id": f"c{i}",
            "impression_id": f"i{i}",
            "user_id": imp["user_id"],
            "video_id": video,
            "poster_id": poster,
            "placement": "row",
        }
        if roll < 0.12:
            click_t = t + rng.randrange(100, 60_000)
            counts[1] += 1
            send_t = (
                click_t if rng.random() > 0.1 else t - 2000
            )  # before its impression
            sends.append((send_t, "click", {**click, "event_time": click_t}))
            if rng.random() < 0.1:  # the same click delivered twice
                sends.append((click_t + 10, "click", {**click, "event_time": click_t}))
            if rng.random() < 0.1:  # a second, different click: not credited
                repeat = {**click, "event_id": f"c{i}b", "event_time": click_t + 5}
                sends.append((click_t + 5, "click", repeat))
        elif roll < 0.14:
            late = {**click, "event_time": t + window_ms + 70_000}
            sends.append((t + 60_000, "click", late))
        elif roll < 0.15:
            ghost = {**click, "impression_id": f"ghost{i}", "event_time": t + 100}
            sends.append((t + 100, "click", ghost))
    sends.sort(key=lambda item: item[0])
    return [(kind, record) for _, kind, record in sends], expected
