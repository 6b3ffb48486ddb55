"""Prometheus metrics of the gateway and the collector.

All live in the process-wide default registry, served at ``/metrics``.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
CIRCUIT_OPEN = Gauge(
    "keyart_gateway_redis_circuit_open",
    "1 while the gateway skips Redis after repeated failures, else 0.",
)
