"""Shared set-up of the learner benchmarks: a private stack and worker processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import redis

from keyart.keys import Keys
from keyart.settings import Settings, load_settings
from keyart.stack import LocalStack, create_topics, free_port

ROOT = Path(__file__).resolve().parent.parent

WORKER_FIELDS = (
    "kafka_bootstrap",
    "redis_url",
    "redis_prefix",
    "topic_prefix",
    "topic_partitions",
    "streams_app_id",
    "state_dir",
    "window_kind",
    "window_s",
    "window_impressions",
    "window_buckets",
    "attribution_window_s",
    "flush_interval_ms",
    "metrics_port",
)


@contextlib.contextmanager
def private_stack(**overrides: object) -> Iterator[Settings]:
    """A broker and redis-server on free ports; settings with fresh topics."""
    with tempfile.TemporaryDirectory(prefix="keyart-bench-") as folder:
        state = Path(folder)
        boot = load_settings(
            state_dir=state,
            broker_port=0,
            redis_url=f"redis://127.0.0.1:{free_port(0)}/0",
        )
        with LocalStack(boot, state) as info:
            prefix = "b" + uuid.uuid4().hex[:8]
            settings = load_settings(
                kafka_bootstrap=info.kafka_bootstrap,
                redis_url=info.redis_url,
                state_dir=state,
                topic_prefix=prefix,
                redis_prefix=prefix,
                streams_app_id=prefix,
                **overrides,
            )
            create_topics(settings)
            yield settings


@contextlib.contextmanager
def worker(settings: Settings, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """One ``keyart streams`` process for the duration of the block."""
    env = dict(os.environ)
    for name in WORKER_FIELDS:
        env[f"KEYART_{name.upper()}"] = str(getattr(settings, name))
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "keyart.cli", "streams"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def applied(client: redis.Redis, settings: Settings) -> int:
    """Records the learner has applied (sum of its stored next offsets)."""
    key = Keys(settings.redis_prefix).offsets(settings.streams_app_id)
    return sum(int(v) for v in client.hgetall(key).values())


def wait_assigned(log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while "learner partitions assigned" not in log.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker not assigned in {timeout} s: {log}")
        time.sleep(0.1)
