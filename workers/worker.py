"""The poster worker: a Kafka consumer group on the video-published topic.

Start several (``keyart posters worker`` on each core or machine): the group
spreads the topic's partitions over them. For each message:

1. decode it with the schemas codec and check it against the catalog's
   bounds (:func:`workers.validate.check_video_event`: id length and
   characters, no NUL or other control character, bounded title, uri, cast
   and tags); a record that does not decode or fails a check goes to the
   dead-letter topic with the reason and its original bytes;
2. run the job (:class:`workers.runner.JobRunner`): the job row keyed by
   (video id, event id) makes a redelivered or retried message count once;
3. on success send one ``poster_candidate`` event per candidate, flush, and
   record ``events_sent``; with ``auto_approve_score`` set, candidates at or
   above it (at most ``auto_approve_top`` per aspect ratio, the best
   scoring) are approved and published at once;
4. on a refused input, a value the database refuses (``DataError``,
   ``IntegrityError``: the same on every try), or after
   ``poster_max_attempts`` unexpected errors, the job is ``failed`` with the
   reason and a ``dead_letter`` record (source, reason, original payload) is
   sent;
5. commit the message's offset, only now: a worker that dies before this
   point leaves the message to the next owner of its partition, whose claim
   finds the job and resumes, resends or skips it. When the outcome cannot be
   recorded because the catalog or the broker is unreachable, the worker
   does not stop: it waits (1 s doubling to 30 s) and handles the same
   message again. Only availability errors are retried this way; an error
   about the record itself never holds up its partition.

:func:`run_worker` (``keyart posters worker``) also serves ``/metrics``,
``/healthz`` and ``/readyz`` (broker and catalog reachable) on
``KEYART_METRICS_PORT``; the metrics are in :mod:`workers.metrics`.

Examples
--------
>>> PosterWorker(settings).run(stop=threading.Event())  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

import sqlalchemy as sa

from keyart.settings import Settings
from schemas.codec import DecodeError, get_codec
from workers import metrics
from workers.catalog import CandidateRow, Catalog
from workers.jobs import mark_events_sent
from workers.runner import JobOutcome, JobRunner, candidate_record
from workers.validate import check_video_event

__all__ = ["PosterWorker", "auto_approved", "health_checks", "run_worker"]

logger = logging.getLogger("workers")


def auto_approved(
    rows: list[dict[str, Any]], threshold: float, top: int | None = None
) -> list[str]:
    """The poster ids automatic approval takes from one job's candidates.

    A candidate qualifies when its score is at least ``threshold``; with
    ``top`` set, only the ``top`` best scoring qualify in each aspect ratio
    (ties broken by poster id, so a resent job approves the same ones). A
    human reviewer would approve a handful of posters per placement, not every
    passable frame, and a bandit learns a short list much faster.

    Examples
    --------
    >>> rows = [{"poster_id": p, "aspect": "2:3", "score": s}
    ...         for p, s in [("a", 0.9), ("b", 0.4), ("c", 0.7), ("d", 0.8)]]
    >>> auto_approved(rows, 0.5), auto_approved(rows, 0.5, top=2)
    (['a', 'c', 'd'], ['a', 'd'])
    """
    passing = [r for r in rows if r["score"] >= threshold]
    if top is None:
        return [r["poster_id"] for r in passing]
    by_aspect: dict[str, list[dict[str, Any]]] = {}
    for row in passing:
        by_aspect.setdefault(row["aspect"], []).append(row)
    chosen = set()
    for group in by_aspect.values():
        group.sort(key=lambda r: (-r["score"], r["poster_id"]))
        chosen.update(r["poster_id"] for r in group[:top])
    return [r["poster_id"] for r in passing if r["poster_id"] in chosen]


class PosterWorker:
    """Consume video-published events and produce poster candidates.

    Parameters
    ----------
    settings
        Broker, topics, catalog, store and ``poster_*`` settings.
    runner
        The job runner (made from ``settings`` when omitted).
    producer
        An :class:`producers.events.EventProducer` (made when omitted).
    """

    def __init__(
        self,
        settings: Settings,
        runner: JobRunner | None = None,
        producer: Any | None = None,
    ) -> None:
        from producers.events import EventProducer

        self.settings = settings
        self.runner = runner or JobRunner(settings)
        self.catalog: Catalog = self.runner.catalog
        self.producer = producer or EventProducer(settings)
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.topic = settings.topic("videos")
        self.counts: dict[str, int] = {}
        self.assigned: set[int] = set()  # partitions this worker ever owned
        self.unrecorded = 0  # messages whose outcome could not be recorded yet

    def _consumer(self) -> Any:
        from confluent_kafka import Consumer

        from keyart.logs import librdkafka_logger

        return Consumer(
            {
                "bootstrap.servers": self.settings.kafka_bootstrap,
                "logger": librdkafka_logger("workers.kafka"),
                "group.id": self.settings.poster_group_id,
                "client.id": self.worker_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                # A long video may take minutes between two polls.
                "max.poll.interval.ms": 1_800_000,
                "session.timeout.ms": int(
                    self.settings.poster_session_timeout_s * 1000
                ),
                "heartbeat.interval.ms": int(
                    self.settings.poster_session_timeout_s * 1000 / 3
                ),
            }
        )

    def dead_letter(
        self,
        reason: str,
        payload: bytes,
        key: bytes | None,
        partition: int,
        offset: int,
        why: str = "job_failed",
    ) -> None:
        """Send a ``dead_letter`` record for an input keyart could not use.

        ``why`` labels ``keyart_posters_dead_letters_total``: ``undecodable``,
        ``invalid``, ``catalog`` or ``job_failed``.
        """
        self.producer.send(
            "dead_letter",
            {
                "event_id": uuid.uuid4().hex,
                "event_time": int(time.time() * 1000),
                "source": self.topic,
                "partition": partition,
                "offset": offset,
                "reason": reason,
                "key": key,
                "payload": payload,
            },
            key=key.decode(errors="replace") if key else self.topic,
        )
        self.producer.flush()
        metrics.DEAD_LETTERS.labels(reason=why).inc()
        logger.warning(
            "dead letter for offset %s of partition %s: %s",
            offset,
            partition,
            reason,
            extra={"partition": partition, "offset": offset},
        )

    def _rows_of(self, job_id: int) -> list[dict[str, Any]]:
        with self.catalog.session() as session:
            rows = session.scalars(
                sa.select(CandidateRow).where(CandidateRow.job_id == job_id)
            ).all()
            return [
                {c.name: getattr(r, c.name) for c in CandidateRow.__table__.columns}
                for r in rows
            ]

    def _publish(self, outcome: JobOutcome, video_id: str) -> None:
        rows = (
            outcome.rows if outcome.status == "done" else self._rows_of(outcome.job_id)
        )
        for row in rows:
            self.producer.send("poster_candidate", candidate_record(row, video_id))
        self.producer.flush()
        mark_events_sent(self.catalog, outcome.job_id)
        threshold = self.settings.auto_approve_score
        if threshold is not None:
            from workers.review import ReviewService

            chosen = auto_approved(rows, threshold, self.settings.auto_approve_top)
            if chosen:
                top = self.settings.auto_approve_top
                reason = f"score >= {threshold}" + (
                    f", best {top} per aspect ratio" if top is not None else ""
                )
                ReviewService(self.catalog, self.settings, self.producer).approve(
                    chosen, reviewer="auto", reason=reason
                )

    def handle(
        self,
        value: bytes,
        key: bytes | None = None,
        partition: int = -1,
        offset: int = -1,
    ) -> str:
        """Process one message's bytes; return what happened (never raises)."""
        # Step 1: decode.
        try:
            event = get_codec().decode("video_published", value)
        except DecodeError as error:
            self.dead_letter(
                f"undecodable video_published: {error}",
                value,
                key,
                partition,
                offset,
                "undecodable",
            )
            return "dead_letter"
        problem = check_video_event(event)
        if problem is not None:
            self.dead_letter(problem, value, key, partition, offset, "invalid")
            return "dead_letter"

        # Steps 2 to 4: run (retrying unexpected errors), publish or dead-letter.
        outcome = self.runner.run(event, self.worker_id)
        while outcome.status == "retry":
            time.sleep(min(5.0, 0.5 * outcome.attempts))
            outcome = self.runner.run(event, self.worker_id)
        if outcome.status == "refused":
            self.dead_letter(outcome.reason, value, key, partition, offset, "catalog")
            return "dead_letter"
        if outcome.status in ("done", "resend"):
            self._publish(outcome, event["video_id"])
        elif outcome.status == "failed":
            self.dead_letter(
                f"job {outcome.job_id} failed: {outcome.reason}",
                value,
                key,
                partition,
                offset,
            )
        return outcome.status

    def run(
        self,
        stop: threading.Event | None = None,
        max_messages: int | None = None,
        poll_s: float = 0.5,
    ) -> dict[str, int]:
        """Consume until ``stop`` is set or ``max_messages`` were handled.

        Returns the count of each outcome.
        """
        from confluent_kafka import TopicPartition

        stop = stop or threading.Event()
        consumer = self._consumer()
        consumer.subscribe(
            [self.topic],
            on_assign=lambda _, parts: self.assigned.update(p.partition for p in parts),
        )
        logger.info("poster worker %s consuming %s", self.worker_id, self.topic)
        handled = 0
        backoff = 1.0
        try:
            while not stop.is_set() and (
                max_messages is None or handled < max_messages
            ):
                message = consumer.poll(poll_s)
                if message is None:
                    continue
                if message.error():
                    logger.warning("consumer error: %s", message.error())
                    continue
                try:
                    status = self.handle(
                        message.value() or b"",
                        message.key(),
                        message.partition(),
                        message.offset(),
                    )
                except Exception:  # the catalog or the broker is unreachable
                    self.unrecorded += 1
                    metrics.UNRECORDED.inc()
                    logger.exception(
                        "could not record offset %s of partition %s; retrying in %s s",
                        message.offset(),
                        message.partition(),
                        backoff,
                    )
                    stop.wait(backoff)
                    backoff = min(30.0, backoff * 2)
                    consumer.seek(
                        TopicPartition(
                            message.topic(), message.partition(), message.offset()
                        )
                    )
                    continue
                backoff = 1.0
                # Step 5: the offset moves only once the job is recorded.
                consumer.commit(message=message, asynchronous=False)
                self.counts[status] = self.counts.get(status, 0) + 1
                metrics.JOBS.labels(outcome=status).inc()
                handled += 1
        finally:
            consumer.close()
            self.producer.flush()
            logger.info("poster worker %s stopped: %s", self.worker_id, self.counts)
        return dict(self.counts)


def health_checks(settings: Settings) -> dict[str, Any]:
    """Readiness of a poster worker: the broker and the catalog answer."""
    from keyart.health import check_broker, check_database

    return {
        "broker": check_broker(settings.kafka_bootstrap),
        "database": check_database(settings.database_url),
    }


def run_worker(
    settings: Settings,
    stop: threading.Event | None = None,
    max_messages: int | None = None,
) -> dict[str, int]:
    """Run one poster worker with ``/metrics``, ``/healthz`` and ``/readyz``.

    The endpoints are served on ``KEYART_METRICS_PORT`` (0: any free port,
    logged at start) for as long as the worker consumes.
    """
    from keyart.health import serve_health

    worker = PosterWorker(settings)
    server = serve_health(settings, "posters", health_checks(settings))
    try:
        return worker.run(stop=stop, max_messages=max_messages)
    finally:
        server.stop()
