"""The decision log: every decision the gateway made, produced by a child process.

A select logs twenty decisions, each an Avro record on the ``decisions``
topic. Encoding them and handing them to librdkafka in the gateway cost its
event loop a quarter of a row (in ``bench/bench_gateway_cpu.py``, 0.34-0.44
ms of 1.60-1.66 ms of main-thread CPU per row), and librdkafka's threads took
the cores from it besides. The gateway now keeps each row's decisions as
one compact tuple (:func:`decision_records` gives its layout), and every
:data:`BATCH_S` pickles the rows gathered (about 12 us a row) and writes them
to the standard input of a child process, without waiting; the child
(:mod:`gateway._log_child`) turns them into records, encodes and produces
them.

Nothing is lost silently:

- the child reports every :data:`gateway._log_child.REPORT_S` how many of the
  records it received librdkafka has settled, and which failed and why; the
  gateway adds the failures to ``keyart_gateway_decision_log_failures_total``;
- while the child cannot keep up, rows wait in the pipe and in the gateway's
  write buffer, up to ``max_buffer_bytes``; rows beyond it are counted as
  ``pipe_full``;
- when the child dies, the records it had not settled at its last report are
  counted as ``logger_exit`` (some of them may have been delivered since), and
  a new child is started at once; when children die within
  :data:`FAST_EXIT_S` of starting, each next start waits twice as long, up to
  :data:`RESPAWN_MAX_S`; the newest ``max_pending_rows`` rows logged
  meanwhile wait for the next child, older ones are counted as
  ``logger_down``;
- when the gateway stops, it closes the pipe: the child delivers what it holds
  for up to ``flush_s`` and counts the rest as ``shutdown``; a gateway that is
  killed closes the pipe all the same, so the child still delivers what it
  had received (the rows of its last :data:`BATCH_S`, not yet written, die
  with it); a SIGTERM to the child gives the gateway ``flush_s`` to close the
  pipe before the child stops reading, so a stop of the whole process group
  loses nothing the gateway wrote.

Decisions reach the broker up to :data:`BATCH_S` plus :data:`LINGER_MS`
after their answers, and a decision log that fails is seen in the counter, as
before, not in the select's answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pickle
import struct
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway._log_child import decision_records
from gateway._ratelimit import RateLimitedLog
from gateway.metrics import DECISION_LOG_FAILURES
from keyart.logs import JsonFormatter

__all__ = [
    "BATCH_S",
    "FAST_EXIT_S",
    "LINGER_MS",
    "RESPAWN_MAX_S",
    "WRITE_ROWS",
    "DecisionLog",
    "decision_records",
]

logger = logging.getLogger("gateway")

FAST_EXIT_S = 5.0
"""A child that dies sooner than this after its start makes the next start
wait (1 s, doubling)."""

RESPAWN_MAX_S = 30.0
"""Longest wait before the next child is started."""

BATCH_S = 0.01
"""How long rows gather before they are written to the child together.

Each write to the pipe wakes the child, and on a busy machine the woken child
can take the core from the gateway: in a py-spy profile of
``bench/bench_gateway_cpu.py`` with one write a row, the write was a fifth of
the select's samples, against a twentieth for pickling the row."""

LINGER_MS = 100
"""How long the child's producer gathers decision records into one request.

Nobody waits for a decision record, and the broker's work is per request:
at 500 rows a second, the local broker spent 0.22-0.27 ms of CPU per row on
decision records with librdkafka's usual 5 ms, 0.05-0.07 ms with 50 ms and
0.05 ms with 100 ms (``linger.ms``); the child itself spent less too. On a
machine whose cores the gateway shares with its broker, that is a tenth of a
core at that rate."""

WRITE_ROWS = 250
"""Most rows pickled and written in one go; more wait for the next loop turn.

The rows kept while no child ran (up to ``max_pending_rows``) all reach the
next child at once: pickled together, ten thousand rows of five decisions held
every request up for 130 ms."""

_HEADER = struct.Struct("<I")
_ROOT = str(Path(__file__).resolve().parent.parent)


class DecisionLog:
    """Hand decision rows to the logging child without blocking the loop.

    Parameters
    ----------
    producer_config
        The confluent-kafka configuration of the child's producer.
    topic
        The decisions topic.
    flush_s
        How long the child delivers what it holds when the gateway stops.
    max_buffer_bytes
        Largest write buffer kept while the child does not read.
    batch_s
        How long a row waits to be written with the rows after it.
    max_pending_rows
        Most rows kept while no child runs (between one and the next).
    """

    def __init__(
        self,
        producer_config: Mapping[str, Any],
        topic: str,
        flush_s: float = 5.0,
        max_buffer_bytes: int = 32 << 20,
        batch_s: float = BATCH_S,
        max_pending_rows: int = 10_000,
    ) -> None:
        root = logging.getLogger()
        self.config = {
            "producer": dict(producer_config),
            "topic": topic,
            "flush_s": flush_s,
            # The child logs as this process does.
            "log_level": logging.getLevelName(root.getEffectiveLevel()),
            "log_json": any(
                isinstance(h.formatter, JsonFormatter) for h in root.handlers
            ),
        }
        self.flush_s = flush_s
        self.max_buffer_bytes = max_buffer_bytes
        self.batch_s = batch_s
        self.max_pending_rows = max_pending_rows
        self.pending: list[tuple[Any, ...]] = []
        """Rows not yet written to the child."""
        self._flusher: asyncio.Handle | None = None
        self.sent = 0
        """Records written to the current child."""
        self.settled = 0
        """Records the current child reported settled."""
        self._failed: dict[str, int] = {}
        self._process: asyncio.subprocess.Process | None = None
        self._started_at = 0.0
        self._wait = 1.0
        self._closing = False
        self._watcher: asyncio.Task[None] | None = None
        self._warn = RateLimitedLog(logger, every_s=10.0)

    @property
    def pid(self) -> int | None:
        """The running child's process id."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        """Whether a child is there to take rows."""
        process = self._process
        return (
            process is not None
            and process.returncode is None
            and process.stdin is not None
            and not process.stdin.is_closing()
        )

    async def start(self) -> None:
        """Start the child and the task that watches it."""
        await self._spawn()
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _spawn(self) -> None:
        env = dict(os.environ)
        # The child writes no metrics files: its counts come back in reports.
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_ROOT, env.get("PYTHONPATH", "")) if p
        )
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway._log_child",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        self._started_at = time.monotonic()
        self.sent = self.settled = 0
        self._failed = {}
        self._write(self.config)

    def _write(self, frame: Any) -> None:
        body = pickle.dumps(frame, protocol=5)
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.write(_HEADER.pack(len(body)) + body)

    def log(self, row: tuple[Any, ...]) -> None:
        """Queue one row of decisions (see :func:`decision_records`).

        Never waits, and costs the caller a list append: rows are pickled and
        written together every :attr:`batch_s`, after the answers that made
        them have been sent.
        """
        self.pending.append(row)
        if self._closing:
            # The pipe is closed or about to be: no timer, which a stopping
            # event loop may never run, stands between the row and its count.
            self.flush()
            return
        if self._flusher is None:
            loop = asyncio.get_running_loop()
            self._flusher = loop.call_later(self.batch_s, self.flush)

    def flush(self) -> None:
        """Write the pending rows to the child now."""
        self._flusher = None
        rows, self.pending = self.pending, []
        if not rows:
            return
        if not self.running or self._closing:
            self._between_children(rows)
            return
        if len(rows) > WRITE_ROWS:
            rows, self.pending = rows[:WRITE_ROWS], rows[WRITE_ROWS:]
            self._flusher = asyncio.get_running_loop().call_soon(self.flush)
        count = sum(len(row[-1]) for row in rows)
        assert self._process is not None and self._process.stdin is not None
        transport = self._process.stdin.transport
        if transport.get_write_buffer_size() > self.max_buffer_bytes:
            DECISION_LOG_FAILURES.labels(reason="pipe_full").inc(count)
            self._warn.warning(
                "full", "decision log child reads too slowly: rows dropped"
            )
            return
        self._write(rows)
        self.sent += count

    def _between_children(self, rows: list[tuple[Any, ...]]) -> None:
        """Keep the newest rows for the next child; count the others lost."""
        if self._closing or self._process is None:  # no next child
            lost = rows
        else:
            lost, self.pending = (
                rows[: -self.max_pending_rows],
                rows[-self.max_pending_rows :],
            )
            self._flusher = asyncio.get_running_loop().call_later(
                self.batch_s, self.flush
            )
        count = sum(len(row[-1]) for row in lost)
        if count:
            DECISION_LOG_FAILURES.labels(reason="logger_down").inc(count)
            self._warn.warning("down", "decision log child not running: decisions lost")

    async def _read_reports(self, process: asyncio.subprocess.Process) -> None:
        """Apply the child's reports until its output ends; never raises on
        what the child wrote, since the watcher must outlive it."""
        assert process.stdout is not None
        while True:
            try:
                line = await process.stdout.readline()
            except ValueError:  # longer than the reader's limit: skipped
                logger.warning("decision log child wrote an overlong report line")
                continue
            if not line:
                return
            try:
                report = json.loads(line)
                settled = int(report["settled"])
                failed = {str(k): int(v) for k, v in dict(report["failed"]).items()}
            except (ValueError, KeyError, TypeError):
                logger.warning("decision log child said %r", line[:200])
                continue
            for reason, total in failed.items():
                new = total - self._failed.get(reason, 0)
                if new > 0:
                    DECISION_LOG_FAILURES.labels(reason=reason).inc(new)
            self._failed = failed
            self.settled = settled

    async def _watch(self) -> None:
        """Count what a dead child held, and start the next one."""
        while True:
            process = self._process
            assert process is not None
            await self._read_reports(process)
            code = await process.wait()
            if self._closing:
                return
            lost = self.sent - self.settled
            if lost > 0:
                DECISION_LOG_FAILURES.labels(reason="logger_exit").inc(lost)
            # Counted: a close() before the next child starts must not count
            # them again.
            self.sent = self.settled = 0
            logger.error(
                "decision log child %s exited with %s; up to %s decisions lost",
                process.pid,
                code,
                max(lost, 0),
            )
            if time.monotonic() - self._started_at < FAST_EXIT_S:
                await asyncio.sleep(self._wait)
                self._wait = min(self._wait * 2, RESPAWN_MAX_S)
            else:
                self._wait = 1.0
            while not self._closing:
                try:
                    await self._spawn()
                except OSError as error:
                    # Out of file descriptors or memory for a moment: the
                    # rows wait, and the next start waits longer.
                    logger.error(
                        "cannot start the decision log child: %r; next try in %s s",
                        error,
                        self._wait,
                    )
                    await asyncio.sleep(self._wait)
                    self._wait = min(self._wait * 2, RESPAWN_MAX_S)
                    continue
                if self._closing:
                    # close() ran while this child started and did not see
                    # it: the end of its input makes it exit like the others.
                    started = self._process
                    assert started is not None and started.stdin is not None
                    started.stdin.close()
                break
            else:
                return

    async def close(self) -> None:
        """Let the child deliver what it holds, then wait for it to exit."""
        if self._flusher is not None:
            self._flusher.cancel()
        self.flush()
        # All of them, not WRITE_ROWS a loop turn: no request waits on a stop.
        while self.pending and self.running:
            self.flush()
        self._closing = True
        # Rows kept for a next child that will not start now: counted here,
        # not by a timer the stopping event loop may never run.
        if self._flusher is not None:
            self._flusher.cancel()
        self.flush()
        process = self._process
        if process is None:
            return
        if process.returncode is None:
            assert process.stdin is not None
            process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), self.flush_s + 5.0)
            except TimeoutError:
                logger.error("decision log child did not stop; killing it")
                process.kill()
                await process.wait()
        if self._watcher is not None:
            try:
                await asyncio.wait_for(self._watcher, 2.0)
            except (TimeoutError, asyncio.CancelledError):
                self._watcher.cancel()
            except Exception:  # the gateway's stop must go on to Redis and Kafka
                logger.exception("the decision log's watcher had failed")
        lost = self.sent - self.settled
        if lost > 0:
            DECISION_LOG_FAILURES.labels(reason="logger_exit").inc(lost)
            logger.error("decision log: up to %s decisions lost at shutdown", lost)
