"""Redis keys the learner writes beyond :mod:`keyart.keys`.

Per-partition learner state lives under the partition number of the event
topics (impressions and clicks are co-partitioned: partition ``n`` of both
belongs to one worker):

=======================================  ======  ================================
key                                      type    what it holds
=======================================  ======  ================================
``{p}:wstate:{partition}``               hash    ``{video}/{arm field}`` ->
                                                 ``"n,c|key,n,c,key,n,c..."``:
                                                 all-time counts and window
                                                 buckets
``{p}:pending:{partition}``              hash    impression id -> credited flag
                                                 byte + Avro impression
``{p}:waiting:{partition}``              hash    click id -> Avro click waiting
                                                 for its impression
``{p}:learner:{partition}``              hash    ``clock_ms`` (partition clock),
                                                 ``updated_ms``,
                                                 ``topic_id:{topic}`` (the id of
                                                 the topic the offsets belong
                                                 to)
``{p}:model:linucb:{partition}``         hash    LinUCB shard: ``a``, ``b``
                                                 (float64 bytes), ``n``,
                                                 ``clicks``, ``dim``
``{p}:model:fm:{partition}``             hash    FM shard: ``intercept``,
                                                 ``examples``, ``n_factors``,
                                                 ``w:{feature}``,
                                                 ``v:{feature}`` (float64 bytes)
``{p}:catalog:offsets``                  hash    ``{posters topic}:{partition}``
                                                 -> next offset of the posters
                                                 topic the catalog holds
``{p}:catalog:topic_ids``                hash    ``{posters topic}:{partition}``
                                                 -> id of the topic that offset
                                                 belongs to
=======================================  ======  ================================

Redis is the learner's state, so a Kafka commit alone is not evidence that an
event's effect exists: on assignment each partition is read from the offset
stored here (``{p}:offsets:{group}`` for impressions and clicks,
``{p}:catalog:offsets`` for posters), or from the earliest retained offset
when none is stored (Redis lost its data, or a new prefix), whatever offset
Kafka has committed.
"""

from __future__ import annotations

from keyart.keys import Keys, escape

__all__ = ["StreamKeys"]


class StreamKeys(Keys):
    """:class:`keyart.keys.Keys` plus the learner's per-partition state."""

    __slots__ = ()

    def wstate(self, partition: int) -> str:
        return f"{self.prefix}:wstate:{partition}"

    def pending(self, partition: int) -> str:
        return f"{self.prefix}:pending:{partition}"

    def waiting(self, partition: int) -> str:
        return f"{self.prefix}:waiting:{partition}"

    def learner(self, partition: int) -> str:
        return f"{self.prefix}:learner:{partition}"

    def model_shard(self, name: str, partition: int) -> str:
        return f"{self.prefix}:model:{escape(name)}:{partition}"

    def catalog_offsets(self) -> str:
        return f"{self.prefix}:catalog:offsets"

    def catalog_topic_ids(self) -> str:
        return f"{self.prefix}:catalog:topic_ids"
