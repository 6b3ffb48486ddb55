"""The Redis key layout keyart reads and writes, in one place.

Every id that reaches a key is escaped: letters, digits, ``.``, ``_`` and
``-`` pass; every other byte is written ``%XX``. So a user id such as
``"a:b*"`` can neither reach another key nor match a pattern.

=================================  ======  ====================================
key                                type    what it holds
=================================  ======  ====================================
``{p}:arms:{video}``               hash    arm field -> packed ``ArmStats``;
                                           ``_updated_ms`` -> last flush time
``{p}:posters:{video}``            set     approved poster ids of the video
``{p}:poster:{poster}``            hash    video_id, image_url, aspect,
                                           placements, features, tags,
                                           embedding, status, created_ms
``{p}:model:{name}``               hash    an online model's parameters
                                           (linucb, fm), version, updated_ms
``{p}:seen:{user}:{video}``        zset    poster -> last time shown to user
``{p}:expo:{video}``               hash    exposure per poster and bucket
``{p}:retired:{video}``            hash    poster -> why it was retired
``{p}:config:{name}``              hash    versioned rules and experiments
``{p}:dedupe:{kind}:{partition}``  zset    event id -> event time (seconds)
``{p}:offsets:{group}``            hash    topic:partition -> next offset
``{p}:schemas``                    hash    writer fingerprint -> schema JSON
``{p}:collected:{kind}:{event}``   string  the collector's claim of an event id
``{p}:collected:%23{kind}%23{d}``  string  the event decision {d} backs
=================================  ======  ====================================

The streaming learner adds its per-partition state keys in
``streams/state_keys.py``.

Examples
--------
>>> Keys("ka").arms("movie:42")
'ka:arms:movie%3A42'
"""

from __future__ import annotations

from functools import lru_cache

__all__ = ["Keys", "arm_field", "escape"]

_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@lru_cache(maxsize=65_536)
def escape(value: str) -> str:
    """Escape an id for use inside a Redis key (see the module docstring)."""
    raw = value.encode("utf-8")
    if all(b in _SAFE for b in raw):
        return value
    return "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in raw)


def arm_field(poster_id: str, placement: str = "", segment: str = "") -> str:
    """The hash field of an arm: the poster, optionally split by placement and
    user segment (``poster|placement|segment``)."""
    if not placement and not segment:
        return escape(poster_id)
    return f"{escape(poster_id)}|{escape(placement)}|{escape(segment)}"


class Keys:
    """Build keyart's Redis keys under one prefix."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def arms(self, video_id: str) -> str:
        return f"{self.prefix}:arms:{escape(video_id)}"

    def posters(self, video_id: str) -> str:
        return f"{self.prefix}:posters:{escape(video_id)}"

    def poster(self, poster_id: str) -> str:
        return f"{self.prefix}:poster:{escape(poster_id)}"

    def model(self, name: str) -> str:
        return f"{self.prefix}:model:{escape(name)}"

    def seen(self, user_id: str, video_id: str) -> str:
        return f"{self.prefix}:seen:{escape(user_id)}:{escape(video_id)}"

    def exposure(self, video_id: str) -> str:
        return f"{self.prefix}:expo:{escape(video_id)}"

    def retired(self, video_id: str) -> str:
        return f"{self.prefix}:retired:{escape(video_id)}"

    def config(self, name: str) -> str:
        return f"{self.prefix}:config:{escape(name)}"

    def dedupe(self, kind: str, partition: int) -> str:
        return f"{self.prefix}:dedupe:{escape(kind)}:{partition}"

    def offsets(self, group: str) -> str:
        return f"{self.prefix}:offsets:{escape(group)}"

    def schemas(self) -> str:
        return f"{self.prefix}:schemas"

    def collected(self, kind: str, event_id: str) -> str:
        """The collector's claim of an event id; impression and click ids are
        separate namespaces, as in the learner's dedupe."""
        return f"{self.prefix}:collected:{escape(kind)}:{escape(event_id)}"

    def token_slot(self, kind: str, decision_id: str) -> str:
        """The event of ``kind`` that a token's decision backs (one of each).

        ``#`` is outside the event id pattern and escapes to ``%23``; the key
        has no ``:`` after ``collected``, so it meets no claim key.
        """
        return f"{self.prefix}:collected:{escape(f'#{kind}#{decision_id}')}"
