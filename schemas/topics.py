"""Kafka topics keyart uses, the event kind on each, and how they are keyed.

Every event topic is keyed by video id, so all arms of a video live on one
partition and one learner owns them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TopicSpec", "TOPICS", "topic_specs"]


@dataclass(frozen=True)
class TopicSpec:
    """A topic's short name, the schema of its records and its partitions."""

    name: str
    schema: str
    partitions: int | None
    """None: the ``topic_partitions`` setting."""
    doc: str


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec("impressions", "impression", None, "Posters shown, keyed by video."),
    TopicSpec("clicks", "click", None, "Clicks on shown posters, keyed by video."),
    TopicSpec("decisions", "decision", None, "Gateway choices with propensities."),
    TopicSpec("videos", "video_published", 4, "New videos for poster production."),
    TopicSpec("candidates", "poster_candidate", 4, "Posters awaiting review."),
    TopicSpec("posters", "poster_published", 4, "Approved posters (new arms)."),
    TopicSpec("deadletter", "dead_letter", 1, "Inputs keyart could not process."),
)


def topic_specs(prefix: str, default_partitions: int) -> dict[str, tuple[int, str]]:
    """Map each full topic name to (partitions, schema name)."""
    return {
        f"{prefix}.{t.name}": (t.partitions or default_partitions, t.schema)
        for t in TOPICS
    }
