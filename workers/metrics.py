"""Prometheus metrics of the poster workers (process-wide registry).

``keyart posters worker`` serves them on ``KEYART_METRICS_PORT`` with
``/healthz`` and ``/readyz`` (:mod:`keyart.health`). Rates come from
Prometheus (``rate(keyart_posters_jobs_total{outcome="failed"}[15m])``); the
process only counts.

Outcomes of ``keyart_posters_jobs_total``: ``done`` (candidates made and
sent), ``failed`` (the video was refused or the job gave up; dead-lettered),
``skipped`` (a redelivered message whose job had already ended), ``resend``
(a finished job whose candidate events had not reached Kafka, sent again) and
``dead_letter`` (a message that never became a job: undecodable, invalid, or
refused by the catalog).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = [
    "CANDIDATES",
    "DEAD_LETTERS",
    "FRAMES",
    "JOBS",
    "JOB_SECONDS",
    "UNRECORDED",
]

JOBS = Counter(
    "keyart_posters_jobs_total",
    "Video-published messages handled, by outcome.",
    ["outcome"],
)
FRAMES = Counter(
    "keyart_posters_frames_total",
    "Frames selected for cropping (a photo counts as one frame).",
)
CANDIDATES = Counter(
    "keyart_posters_candidates_total",
    "Poster candidates written to the catalog, pending review.",
)
JOB_SECONDS = Histogram(
    "keyart_posters_job_seconds",
    "Duration of one video job, from claim to recorded outcome.",
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600),
)
DEAD_LETTERS = Counter(
    "keyart_posters_dead_letters_total",
    "Records sent to the dead-letter topic, by why: undecodable, invalid "
    "(refused by the checks of workers.validate), catalog (refused by the "
    "database), job_failed (bad video or attempts exhausted).",
    ["reason"],
)
UNRECORDED = Counter(
    "keyart_posters_unrecorded_total",
    "Messages whose outcome could not be recorded (catalog or broker "
    "unreachable) and that are handled again after a pause.",
)
