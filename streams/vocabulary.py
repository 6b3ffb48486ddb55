"""The bounded vocabulary of context features an FM shard learns.

Context keys come from clients, and any request may name new ones. Every
feature name river's FM learns gets a weight and a latent vector that stay
for good: two fields of the shard's hash in Redis, and a row of the model
every gateway loads. So each shard admits context features first come, up
to ``fm_max_context_features``, and only the names ``fm_context_features``
lists when it lists any. A refused feature is left out of the example, not
the example itself: the impression still teaches the poster's looks and id.

The gateway scores with the same rule without being told it: a feature the
shard never learnt has no row in the published model, and
:meth:`bandits.fm.FMScorer.logits` ignores names it has no row for. Poster
features (``p:``) and ids (``poster=``) come from the catalog, not from
clients, and are not counted.

Which features fill the vocabulary depends on what each partition saw first,
so shards may admit different ones. Shards grown before the cap existed keep
every feature they hold (only new ones are refused); delete their
``{p}:model:fm:<partition>`` keys to start them afresh.

Examples
--------
>>> vocabulary = ContextVocabulary(max_features=1)
>>> vocabulary.filter({"u:age": 0.5, "u:night": 1.0, "poster=a": 1.0})
{'u:age': 0.5, 'poster=a': 1.0}
>>> dict(vocabulary.refused)
{'full': 1}
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Collection, Iterable, Mapping

from keyart.settings import Settings
from streams import metrics

__all__ = ["WARNING_INTERVAL_S", "ContextVocabulary"]

logger = logging.getLogger("streams")

WARNING_INTERVAL_S = 60.0
"""Least time between two warnings of one shard about refused features."""

_USER = "u:"


class ContextVocabulary:
    """Which context features one FM shard learns (see the module docstring).

    Parameters
    ----------
    max_features
        Most distinct context features admitted.
    allowed
        Context feature names that may be admitted, without the ``u:`` prefix
        (empty: any).
    partition
        The shard's partition, named in the warnings.

    Attributes
    ----------
    admitted
        The context features learnt, ``u:`` prefixed.
    refused
        Features left out since the last :meth:`report`, by reason:
        ``not_allowed`` or ``full``.
    """

    def __init__(
        self,
        max_features: int,
        allowed: Collection[str] = (),
        partition: int | None = None,
    ) -> None:
        self.max_features = max_features
        self.allowed = frozenset(_USER + name for name in allowed)
        self.partition = partition
        self.admitted: set[str] = set()
        self.refused: Counter[str] = Counter()
        self._unwarned: Counter[str] = Counter()
        self._quiet_until = 0.0

    @classmethod
    def from_settings(
        cls, settings: Settings, partition: int | None = None
    ) -> ContextVocabulary:
        """The vocabulary ``fm_max_context_features`` and ``fm_context_features``
        describe."""
        return cls(
            settings.fm_max_context_features, settings.fm_context_names(), partition
        )

    def restore(self, names: Iterable[str]) -> None:
        """Admit the context features among ``names``, those a stored shard
        holds, whatever the limits: they are in the model already."""
        self.admitted.update(n for n in names if n.startswith(_USER))

    def filter(self, x: Mapping[str, float]) -> dict[str, float]:
        """``x`` without the context features this shard does not learn."""
        out = {}
        admitted = self.admitted
        for name, value in x.items():
            if name.startswith(_USER) and name not in admitted:
                if self.allowed and name not in self.allowed:
                    self.refused["not_allowed"] += 1
                    continue
                if len(admitted) >= self.max_features:
                    self.refused["full"] += 1
                    continue
                admitted.add(name)
            out[name] = value
        return out

    def report(self) -> None:
        """Count the features refused since the last call in
        ``keyart_streams_fm_context_refused_total``, and warn about them at
        most once every :data:`WARNING_INTERVAL_S` seconds."""
        if not self.refused:
            return
        for reason, n in self.refused.items():
            metrics.FM_CONTEXT_REFUSED.labels(reason).inc(n)
        self._unwarned.update(self.refused)
        self.refused.clear()
        now = time.monotonic()
        if now < self._quiet_until:
            return
        logger.warning(
            "FM shard of partition %s left out %s context features since the last "
            "warning: %s not in KEYART_FM_CONTEXT_FEATURES, %s past the cap of %s "
            "(KEYART_FM_MAX_CONTEXT_FEATURES)",
            self.partition,
            self._unwarned.total(),
            self._unwarned["not_allowed"],
            self._unwarned["full"],
            self.max_features,
            extra={"partition": self.partition},
        )
        self._unwarned.clear()
        self._quiet_until = now + WARNING_INTERVAL_S
