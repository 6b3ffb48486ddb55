"""Prometheus metrics of the gateway and the collector.

One gateway process keeps them in the process-wide default registry, served at
``/metrics``. With several worker processes (``keyart gateway --workers N``)
every worker writes its values to files in ``PROMETHEUS_MULTIPROC_DIR``
(prometheus_client's multiprocess mode) and ``/metrics`` answers from
:func:`workers_registry`, which adds up the files of every worker, whichever
worker takes the scrape. Counters and histograms (every bucket, sum and
count) are summed over all workers, stopped ones included, so they never go
back; each gauge says below how its workers' values combine
(``multiprocess_mode``). In that mode counters and histograms carry no
``_created`` sample, and the ``python_*`` metrics of one worker are left out.

Examples
--------
>>> import tempfile
>>> with tempfile.TemporaryDirectory() as path:
...     names = {m.name for m in workers_registry(path).collect()}
>>> names
set()
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

__all__ = [
    "COLLECTED",
    "DECISIONS",
    "DECISION_LOG_FAILURES",
    "FALLBACKS",
    "REDIS_SECONDS",
    "RETIREMENTS",
    "ROW_SECONDS",
    "RULE_HITS",
    "CIRCUIT_OPEN",
    "forget_dead_workers",
    "live_workers",
    "retire_worker",
    "variant_decisions",
    "workers_registry",
]

_FAST = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05)

ROW_SECONDS = Histogram(
    "keyart_gateway_decision_seconds",
    "Time to answer one select request (a whole row), inside the process.",
    buckets=(*_FAST, 0.1, 0.25, 1.0),
)
REDIS_SECONDS = Histogram(
    "keyart_gateway_redis_seconds",
    "Time of the Redis read of one row.",
    buckets=_FAST,
)
DECISIONS = Counter(
    "keyart_gateway_decisions_total",
    "Posters chosen, per experiment variant and policy.",
    ["variant", "policy"],
)
FALLBACKS = Counter(
    "keyart_gateway_fallbacks_total",
    "Videos answered without live state, by reason.",
    ["reason"],
)
RULE_HITS = Counter(
    "keyart_gateway_rule_hits_total",
    "Decisions in which a business rule changed at least one candidate's score.",
    ["rule"],
)
RETIREMENTS = Counter(
    "keyart_gateway_retirements_total",
    "Posters this process retired by the sequential retirement rule.",
)
COLLECTED = Counter(
    "keyart_collector_events_total",
    "Events the collector received, by kind and outcome "
    "(produced, duplicate, invalid, failed).",
    ["kind", "outcome"],
)
DECISION_LOG_FAILURES = Counter(
    "keyart_gateway_decision_log_failures_total",
    "Decision records that did not reach the broker, by reason.",
    ["reason"],
)
# Each worker keeps its own circuit. "livemax": the largest value among the
# running workers, so 1 while any of them skips Redis (what the alert
# KeyartGatewayRedisCircuitOpen asks); a stopped worker's value is dropped.
# The gauge has no labels, so every worker writes its file of live gauges as
# it imports this module: :func:`live_workers` reads the workers from it.
CIRCUIT_OPEN = Gauge(
    "keyart_gateway_redis_circuit_open",
    "1 while the gateway skips Redis after repeated failures, else 0.",
    multiprocess_mode="livemax",
)

_LIVE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")


def workers_registry(path: str) -> CollectorRegistry:
    """A registry of every worker's metrics in ``path``, added up.

    It holds only the multiprocess collector and the workers' ``process_*``
    metrics (labelled ``pid``): metrics of the default registry would count
    the answering worker twice, and its ``python_*`` ones describe one worker.
    """
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)
    registry.register(_WorkerProcesses(path))
    return registry


def variant_decisions(path: str | None) -> dict[str, float]:
    """Posters chosen per experiment variant (:data:`DECISIONS`), all policies.

    With ``path``, the ``PROMETHEUS_MULTIPROC_DIR`` of several workers: the sum
    over every worker whose files are there, stopped ones included, as
    ``/metrics`` counts them; only the counter files are read. With None (one
    process): this process's counts.
    """
    families: Iterable[Metric]
    if path is None:
        families = DECISIONS.collect()
    else:
        files = glob.glob(os.path.join(path, "counter_*.db"))
        families = MultiProcessCollector.merge(files, accumulate=True)
    name = DECISIONS.describe()[0].name
    variant_to_count: dict[str, float] = {}
    for family in families:
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                variant = sample.labels["variant"]
                variant_to_count[variant] = (
                    variant_to_count.get(variant, 0.0) + sample.value
                )
    return variant_to_count


def live_workers(path: str) -> list[int]:
    """Pids of the workers whose live gauges are in ``path``, running or not."""
    pids = set()
    for name in os.listdir(path):
        match = _LIVE_FILE.fullmatch(name)
        if match:
            pids.add(int(match.group(1)))
    return sorted(pids)


def retire_worker(path: str, pid: int) -> None:
    """Drop the live gauges of worker ``pid``; its counters stay in the sums."""
    mark_process_dead(pid, path)


def forget_dead_workers(path: str) -> list[int]:
    """Retire the workers of ``path`` that ended without retiring themselves.

    A worker killed outright never runs its shutdown; uvicorn starts another in
    its place, which calls this so the dead one's gauges stop counting.
    """
    dead = [pid for pid in live_workers(path) if not _running(pid)]
    for pid in dead:
        retire_worker(path, pid)
    return dead


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process holds the pid
    return True


class _WorkerProcesses(Collector):
    """``process_*`` metrics (memory, CPU, files) of each live worker, by pid."""

    def __init__(self, path: str) -> None:
        self.path = path

    def collect(self) -> Iterator[Metric]:
        name_to_family: dict[str, Metric] = {}
        for pid in live_workers(self.path):
            for family in _process_of(pid).collect():
                merged = name_to_family.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                for sample in family.samples:
                    merged.add_sample(sample.name, {"pid": str(pid)}, sample.value)
        yield from name_to_family.values()


def _process_of(pid: int) -> ProcessCollector:
    """prometheus_client's reader of /proc for the process ``pid``."""
    return ProcessCollector(pid=lambda: pid, registry=None)
