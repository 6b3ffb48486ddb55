"""Prometheus metrics of the streaming learner (process-wide registry).

Rates come from Prometheus (``rate(keyart_streams_events_total[1m])``); the
process only counts.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "ARMS_WRITTEN",
    "ATTRIBUTION",
    "DEAD_LETTERS",
    "DEDUPE_HITS",
    "EVENTS",
    "FLUSH_SECONDS",
    "FM_CONTEXT_REFUSED",
    "LAG",
    "NON_FINITE",
    "OFFSET_RESETS",
    "REDIS_RETRIES",
    "SKIPPED_REPLAY",
    "STATE_AGE",
]

EVENTS = Counter("keyart_streams_events_total", "Events applied, by topic.", ["topic"])
DEDUPE_HITS = Counter(
    "keyart_streams_dedupe_hits_total", "Repeated event ids ignored.", ["kind"]
)
ATTRIBUTION = Counter(
    "keyart_streams_attribution_total",
    "Clicks by attribution outcome (see streams.attribution).",
    ["outcome"],
)
DEAD_LETTERS = Counter(
    "keyart_streams_dead_letters_total",
    "Events sent to the dead-letter topic, by source topic.",
    ["topic"],
)
SKIPPED_REPLAY = Counter(
    "keyart_streams_skipped_replay_total",
    "Records below the stored offset, already applied before a restart.",
)
OFFSET_RESETS = Counter(
    "keyart_streams_offset_resets_total",
    "Partitions whose stored offset was past the log end (topic recreated or "
    "truncated), found at assignment or while running, resumed from the start "
    "of the new log.",
    ["topic"],
)
ARMS_WRITTEN = Counter(
    "keyart_streams_arms_written_total", "Arm statistics written to Redis."
)
FLUSH_SECONDS = Histogram(
    "keyart_streams_flush_seconds",
    "Duration of one pipelined Redis flush (MULTI/EXEC).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
STATE_AGE = Gauge(
    "keyart_streams_state_age_seconds",
    "Seconds since the learner's state last reached Redis.",
)
LAG = Gauge(
    "keyart_streams_lag",
    "Records between the partition's log end and the next offset to apply.",
    ["topic", "partition"],
)
NON_FINITE = Counter(
    "keyart_streams_non_finite_total",
    "Model parameters found NaN or infinite and not published (the last good "
    "ones kept), by what.",
    ["what"],
)
REDIS_RETRIES = Counter(
    "keyart_streams_redis_retries_total",
    "Redis calls retried during an outage, by operation.",
    ["operation"],
)
FM_CONTEXT_REFUSED = Counter(
    "keyart_streams_fm_context_refused_total",
    "Context features left out of FM examples, by reason: not_allowed (not in "
    "KEYART_FM_CONTEXT_FEATURES) or full (the shard holds "
    "KEYART_FM_MAX_CONTEXT_FEATURES already).",
    ["reason"],
)
