"""The streaming learner: impressions and clicks from Kafka into live Redis state.

Where things happen:

* ``consumer`` - the Faust app whose learner topics are fetched in batches;
* ``learner`` - applies batches, flushes to Redis, follows rebalances;
* ``redis_guard`` - rides out Redis outages, refuses to write over lost state;
* ``publish`` - merges the shards into the global models (finite ones only);
* ``partition`` - one partition's state and how it learns;
* ``saving`` - how a partition is saved to Redis and restored;
* ``attribution``, ``dedupe``, ``validate`` - the rules for each event;
* ``shards``, ``fm_shard`` - per-partition shares of the global models;
* ``catalog`` - approved posters becoming arms;
* ``resp`` - the hand-packed ``MULTI/EXEC`` of a flush;
* ``app``, ``worker``, ``cli`` - ``keyart streams``.
"""

from typing import Any

__all__ = ["Learner", "create_app"]


def __getattr__(name: str) -> Any:
    # Lazy: importing Faust costs a second, and `keyart --help` imports us.
    if name == "create_app":
        from streams.app import create_app

        return create_app
    if name == "Learner":
        from streams.learner import Learner

        return Learner
    raise AttributeError(f"module 'streams' has no attribute {name!r}")
