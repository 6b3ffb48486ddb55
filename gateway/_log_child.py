"""The decision log's child process: Avro-encode rows and produce them.

Run by :class:`gateway.decision_log.DecisionLog` as ``python -m
gateway._log_child``; it is not meant to be started by hand. Its standard
input carries frames (a 4-byte little-endian length, then a pickle): first the
producer's configuration, then lists of rows laid out as
:func:`gateway.decision_log.decision_records` reads them. Its standard output carries
one JSON object a line, at most every :data:`REPORT_S` and once at the end:

- ``settled``: records this child received that librdkafka no longer holds
  (delivered, or failed), counted since it started;
- ``failed``: records that did not reach the broker, by reason (``encode``,
  ``queue_full``, ``broker``, ``shutdown``), counted since it started.

The end of its standard input (the gateway stopped, or died) makes it deliver
what it holds, for up to the configured flush time, report, and exit. SIGTERM
does the same once the gateway has had that flush time to close the pipe: a
stop of the whole process group (systemd's, say) reaches the gateway too, and
the rows its last requests logged are still on their way. SIGINT and SIGHUP
are ignored: a Ctrl-C in a terminal, or the terminal closing, reaches the
whole process group, and the gateway closes the pipe when it stops or dies.
"""

from __future__ import annotations

import json
import logging
import pickle
import signal
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any, BinaryIO

from gateway._orphan import step_aside
from gateway._ratelimit import RateLimitedLog
from keyart.logs import configure

__all__ = ["REPORT_S", "decision_records", "main"]

logger = logging.getLogger("gateway")

# A broker that is down fails every record a select made, twenty a row: one
# line an interval says so, as the gateway's own producer does, where a line a
# record would flood the log the child shares with the gateway.
_warn = RateLimitedLog(logger)

REPORT_S = 0.05
"""How often the child reports its counts while they move.

A child that dies has the records it received since its last report counted
as lost, delivered or not: at 0.5 s, each kill of a child taking 10,000
records a second counted about 5,600 of them as lost, where 30 were. A report
costs the child a line every poll of its producer, and the gateway a JSON
parse."""

_HEADER = struct.Struct("<I")


def read_frame(stream: BinaryIO) -> Any | None:
    """The next pickled frame, or None at the end of the stream."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    body = stream.read(size)
    if len(body) < size:
        return None
    return pickle.loads(body)  # noqa: S301 - frames come from the parent's pipe


def decision_records(row: tuple[Any, ...]) -> Iterator[dict[str, Any]]:
    """The ``decision`` records of one row, as :class:`DecisionLog` received it.

    ``row`` is ``(event_time, request_id, user_id, placement, variant,
    experiment_version, context, decisions)``; each decision is
    ``(event_id, video_id, poster_id, policy, propensity, model_version,
    candidates, scores, rules, fallback)``.
    """
    when, request_id, user, placement, variant, version, context, decisions = row
    for event_id, video, poster, policy, p, model, ids, scores, rules, fb in decisions:
        yield {
            "event_id": event_id,
            "event_time": when,
            "request_id": request_id,
            "user_id": user,
            "video_id": video,
            "poster_id": poster,
            "placement": placement,
            "variant": variant,
            "policy": policy,
            "propensity": p,
            "model_version": model,
            "experiment_version": version,
            "candidates": ids,
            "scores": scores,
            "rules": rules,
            "fallback": fb,
            "context": context,
        }


class _Child:
    def __init__(self, config: dict[str, Any], out: Any) -> None:
        from confluent_kafka import Producer

        from schemas.codec import get_codec

        self.topic: str = config["topic"]
        self.flush_s: float = config["flush_s"]
        self.records = decision_records
        self.encode = get_codec().encode
        from keyart.logs import librdkafka_logger

        self.producer = Producer(
            {
                **config["producer"],
                "delivery.report.only.error": True,
                "logger": librdkafka_logger("gateway.decision_log.kafka"),
            }
        )
        self.out = out
        self.lock = threading.Lock()
        self.received = 0
        self.failed: Counter[str] = Counter()
        self.reported: tuple[int, dict[str, int]] | None = None
        self.reported_at = 0.0
        self.finished = False
        self.stopping = threading.Event()

    def produce(self, frame: list[Any]) -> None:
        messages = []
        failed = 0
        received = 0
        for row in frame:
            for record in self.records(row):
                received += 1
                try:
                    value = self.encode("decision", record)
                except ValueError as unreadable:
                    _warn.warning(
                        "encode", "cannot encode a decision record: %s", unreadable
                    )
                    failed += 1
                    continue
                messages.append({"value": value, "key": record["video_id"].encode()})
        refused: Counter[str] = Counter(encode=failed)
        with self.lock:  # the count and the queue move together for reports
            queued = len(messages)
            if messages:
                queued = self.producer.produce_batch(
                    self.topic, messages, on_delivery=self._delivered
                )
            self.received += received
        if queued < len(messages):
            from confluent_kafka import KafkaError

            for message in messages:
                error = message.get("_error")
                if error is not None:
                    full = error.code() == KafkaError._QUEUE_FULL
                    refused["queue_full" if full else "broker"] += 1
        with self.lock:
            self.failed.update(refused)

    def _delivered(self, error: Any, message: Any) -> None:
        if error is not None:
            with self.lock:
                self.failed["broker"] += 1
            _warn.warning("broker", "a decision record was not delivered: %s", error)

    def serve(self) -> None:
        """Serve delivery reports and send counts until told to stop."""
        while not self.stopping.is_set():
            self.producer.poll(0.05)
            self.report()

    def report(self, force: bool = False) -> None:
        if not force and time.monotonic() - self.reported_at < REPORT_S:
            return
        with self.lock:
            failed = {k: v for k, v in self.failed.items() if v}
            # Every record received is in librdkafka's queue or settled; at
            # the end, what is left in the queue is failed as "shutdown".
            held = 0 if self.finished else len(self.producer)
            settled = self.received - held
        if (settled, failed) == self.reported and not force:
            return
        self.reported_at = time.monotonic()
        self.reported = (settled, failed)
        try:
            self.out.write(json.dumps({"settled": settled, "failed": failed}) + "\n")
            self.out.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass  # the gateway is gone; its own counts are all there is

    def finish(self) -> None:
        """Deliver what is held for up to ``flush_s``, then report once more."""
        self.stopping.set()
        left = self.producer.flush(self.flush_s)
        with self.lock:
            self.finished = True
            if left:
                self.failed["shutdown"] += left
        if left:
            logger.error("decision log: %s records undelivered at shutdown", left)
        self.report(force=True)


def _stop(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def _stop_after(grace_s: float) -> Any:
    """A SIGTERM handler: stop reading ``grace_s`` after the first SIGTERM."""

    def handler(signum: int, frame: Any) -> None:
        if signal.getitimer(signal.ITIMER_REAL)[0] == 0:
            signal.setitimer(signal.ITIMER_REAL, max(grace_s, 0.001))

    return handler


def main() -> None:
    """Read frames from standard input until it ends (see the module)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    step_aside()
    signal.signal(signal.SIGTERM, _stop)
    stream = sys.stdin.buffer
    config = read_frame(stream)
    if not isinstance(config, dict):
        print("decision log: no configuration on standard input", file=sys.stderr)
        sys.exit(2)
    try:
        configure(config["log_level"], as_json=config["log_json"])
    except ValueError:  # a level only the gateway's own code defined
        configure("WARNING", as_json=config["log_json"])
    signal.signal(signal.SIGALRM, _stop)
    signal.signal(signal.SIGTERM, _stop_after(config["flush_s"]))
    try:
        child = _Child(config, sys.stdout)
    except Exception as error:  # a bad producer setting: say it in one line
        logger.error("decision log: cannot start its producer: %s", error)
        sys.exit(2)
    server = threading.Thread(target=child.serve, name="log-reports", daemon=True)
    server.start()
    try:
        while (frame := read_frame(stream)) is not None:
            child.produce(frame)
    finally:
        # Reading is over: a SIGTERM's timer must not cut the delivery short.
        signal.setitimer(signal.ITIMER_REAL, 0)
        child.finish()


if __name__ == "__main__":
    main()
