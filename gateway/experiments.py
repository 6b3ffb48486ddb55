"""Deterministic, sticky assignment of users to experiment variants.

A user's point is the first 8 bytes of ``BLAKE2b(salt, user_id)`` read as a
fraction in [0, 1). Variants own consecutive ranges of that line in the order
they are listed, sized by their weights. The same user, salt and split always
give the same variant, in every gateway process, with no state stored. A new
salt reshuffles every user; new weights move the boundaries between ranges,
and only the users between an old and a new boundary change variant.

Examples
--------
>>> from gateway.config import ExperimentsDocument
>>> doc = ExperimentsDocument()
>>> Assigner(doc).assign("user-1").name == Assigner(doc).assign("user-1").name
True
"""

from __future__ import annotations

import bisect
import hashlib
from itertools import accumulate

from gateway.config import ExperimentsDocument, Variant

__all__ = ["Assigner", "user_point"]


def user_point(user_id: str, salt: str) -> float:
    """The user's point in [0, 1) for this salt."""
    digest = hashlib.blake2b(
        user_id.encode("utf-8"), digest_size=8, key=salt.encode("utf-8")[:64]
    ).digest()
    return int.from_bytes(digest, "big") / 2.0**64


class Assigner:
    """Assign users to the variants of one experiments document."""

    __slots__ = ("_bounds", "_variants", "salt")

    def __init__(self, document: ExperimentsDocument) -> None:
        total = sum(v.weight for v in document.variants)
        self.salt = document.salt
        self._variants: list[Variant] = list(document.variants)
        self._bounds = [w / total for w in accumulate(v.weight for v in self._variants)]

    def assign(self, user_id: str) -> Variant:
        """The variant that serves ``user_id``."""
        point = user_point(user_id, self.salt)
        index = bisect.bisect_right(self._bounds, point)
        return self._variants[min(index, len(self._variants) - 1)]
