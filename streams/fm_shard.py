"""Per-partition shards of the factorization-machine click model.

Each partition learns its own :class:`bandits.fm.OnlineFM` from a sample of
its impressions (``fm_sample_rate``, chosen by a hash of the impression id, so
a replay picks the same ones). Labels follow the fake-negative scheme: a
sampled impression is learnt as a negative when it arrives, and a click
credited to it adds a positive with the same features. Waiting for the
attribution window to close before calling an impression unclicked would
keep every negative from the model for that long (a minute in the demo), and
a model that has only seen positives rates every poster it has seen clicked
highly. The model then estimates ``p / (1 + p)`` for click probability ``p``;
the export says so (``labels``) and :class:`bandits.fm.FMScorer` turns it back
into ``p``. Sampling impressions, not labels, keeps that calibration without
weights; river's FM costs a few hundred microseconds an example, so learning
from every impression would cost more than everything else the learner does.

Every feature's latent vector is drawn from a generator seeded by the feature
name, not from one shared stream, so a shard restored from Redis draws the
same vectors as one that never stopped, and all shards start each feature
from the same point. A flush writes only the features learnt since the last
one. Context features pass a bounded
:class:`streams.vocabulary.ContextVocabulary` first, so clients that invent
context keys cannot grow the shard without limit. The owner of partition 0
publishes the shards side by side (not their average; see :func:`merge_fm`)
under ``{p}:model:fm`` every :data:`FM_PUBLISH_S` seconds.

Known limitation: SGD depends on the order of examples, and a click that
waited for its impression is learnt when the impression arrives, which
depends on fetch timing; so after a restart the FM sees the same examples,
possibly in a slightly different order.

Examples
--------
>>> shard = FMShard(seed=1)
>>> shard.learn([{"u:age": 1.0, "poster=p1": 1.0}], [True], [1.0])
>>> fields = {k.encode(): v for k, v in shard.take_changes().items()}
>>> FMShard.from_fields(fields, seed=1).export() == shard.export()
True
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bandits.fm import OnlineFM
from keyart.settings import Settings
from streams.vocabulary import ContextVocabulary

__all__ = [
    "FM_FACTORS",
    "FM_LATENT_SD",
    "FM_PUBLISH_S",
    "FMShard",
    "in_fm_sample",
    "merge_fm",
]

FM_FACTORS = 8
"""Length of each feature's latent vector."""

FM_LEARNING_RATE = 0.02
"""SGD step of weights, latent vectors and intercept."""

FM_LATENT_SD = 0.3
"""Spread of the initial draws of the user features' (``u:``) latent vectors.

Every other feature's vector (the poster's looks and its id) starts at zero.
Random vectors on the poster side would add to each poster a random offset
of about a logit (the sum of its many feature-pair interactions), and a
young model would rank the posters by that luck; the offset is unlearnt
only slowly. With poster vectors at zero, a fresh model ranks posters by
their own weights, and the user vectors' randomness is what lets the
interactions grow: a poster vector's gradient is proportional to the user
vectors, so from 0.1, river's default spread, the interactions stayed small
for most of a three-minute demo run. In the
demo's offline simulation (``bench/sim_policies.py``), with every vector
random the FM's lift over Thompson sampling hung on the seed: +1% with the
demo's (two runs) and +10..+14% with others. With this start it was
+9..+13% in four runs over both."""

_DEFAULT_MAX_CONTEXT = Settings.model_fields["fm_max_context_features"].default

FM_PUBLISH_S = 5.0
"""How often the merged FM is published (reading every shard costs its size)."""


def in_fm_sample(impression_id: str, rate: float) -> bool:
    """Whether the FM learns from this impression (a stable hash sample)."""
    return zlib.crc32(impression_id.encode()) % 100_000 < rate * 100_000


class _SeededLatents(dict):
    """Latent vectors made on first use: a user feature's drawn from a
    generator seeded by its name, any other feature's zero (see
    :data:`FM_LATENT_SD`)."""

    def __init__(self, n_factors: int, seed: int) -> None:
        super().__init__()
        self.n_factors = n_factors
        self.seed = seed

    def __missing__(self, name: str) -> np.ndarray:
        if name.startswith("u:"):
            rng = np.random.default_rng([self.seed, zlib.crc32(name.encode())])
            vector = rng.normal(0.0, FM_LATENT_SD, self.n_factors)
        else:
            vector = np.zeros(self.n_factors)
        self[name] = vector
        return vector


class FMShard:
    """One partition's online FM.

    Parameters
    ----------
    seed
        Seed of the latent vectors (the same for every shard).
    vocabulary
        Which context features the shard learns; by default the settings'
        default cap (``fm_max_context_features``) and no allow-list.
    """

    def __init__(self, seed: int, vocabulary: ContextVocabulary | None = None) -> None:
        self.seed = seed
        if vocabulary is None:
            vocabulary = ContextVocabulary(_DEFAULT_MAX_CONTEXT)
        self.vocabulary = vocabulary
        self.fm = OnlineFM(
            n_factors=FM_FACTORS, seed=seed, learning_rate=FM_LEARNING_RATE
        )
        self.fm.model.latents = _SeededLatents(FM_FACTORS, seed)
        self.examples = 0
        self.written_version = 0
        self.touched: set[str] = set()

    @property
    def version(self) -> int:
        return self.examples

    def learn(
        self,
        xs: Sequence[Mapping[str, float]],
        ys: Sequence[bool],
        weights: Sequence[float],
    ) -> None:
        """Learn labelled impressions in order, each with its sample weight;
        context features the vocabulary refuses are left out of them."""
        model = self.fm.model
        touched = self.touched
        admit = self.vocabulary.filter
        for x, y, w in zip(xs, ys, weights, strict=True):
            x = admit(x)
            model.learn_one(x, bool(y), w=w)
            touched.update(x)
        self.vocabulary.report()
        self.examples += len(xs)
        self.fm.version = self.examples

    def export(self) -> dict[str, Any]:
        """JSON-able state, the :meth:`bandits.fm.OnlineFM.export` layout plus
        ``examples``."""
        data = self.fm.export()
        data["labels"] = "fake_negative"
        data["examples"] = self.examples
        data["version"] = self.examples
        return data

    def take_changes(self) -> dict[str, bytes]:
        """Hash fields changed since the last call: ``intercept``,
        ``examples``, ``w:<feature>`` (float text) and ``v:<feature>`` (latent
        vector, float64 bytes). Writing only these keeps a flush's cost
        proportional to the features learnt, not to the model's size."""
        model = self.fm.model
        fields: dict[str, bytes] = {
            "intercept": repr(float(model.intercept)).encode(),
            "examples": str(self.examples).encode(),
            "n_factors": str(FM_FACTORS).encode(),
        }
        for name in self.touched:
            fields[f"w:{name}"] = repr(float(model.weights[name])).encode()
            fields[f"v:{name}"] = np.asarray(model.latents[name], "<f8").tobytes()
        self.touched = set()
        self.written_version = self.examples
        return fields

    @classmethod
    def from_fields(
        cls,
        fields: Mapping[bytes, bytes],
        seed: int,
        vocabulary: ContextVocabulary | None = None,
    ) -> FMShard:
        """Rebuild a shard from the hash :meth:`take_changes` wrote."""
        shard = cls(seed, vocabulary)
        if not fields:
            return shard
        model = shard.fm.model
        for raw, value in fields.items():
            name = raw.decode()
            if name.startswith("w:"):
                model.weights[name[2:]] = float(value)
            elif name.startswith("v:"):
                model.latents[name[2:]] = np.frombuffer(value, "<f8").copy()
        shard.vocabulary.restore([*model.weights, *model.latents])
        model.intercept = float(fields[b"intercept"])
        shard.examples = int(fields[b"examples"])
        shard.fm.version = shard.examples
        shard.written_version = shard.examples
        return shard

    @classmethod
    def from_export(
        cls,
        data: Mapping[str, Any],
        seed: int,
        vocabulary: ContextVocabulary | None = None,
    ) -> FMShard:
        """Rebuild a shard from :meth:`export` output."""
        shard = cls(seed, vocabulary)
        model = shard.fm.model
        model.intercept = float(data["intercept"])
        for name, weight in data["weights"].items():
            model.weights[name] = float(weight)
        for name, vector in data["latents"].items():
            model.latents[name] = np.asarray(vector, dtype=float)
        shard.vocabulary.restore([*model.weights, *model.latents])
        shard.examples = int(data.get("examples", 0))
        shard.fm.version = shard.examples
        shard.written_version = shard.examples
        return shard


def merge_fm(exports: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The shards that have learnt something, side by side, for publishing.

    Shards are not averaged: each learnt its own partition's videos from the
    same starting vectors, and their latent vectors drift apart as they
    learn, so an average pairs vectors that were never trained together.
    :class:`bandits.fm.ShardedFMScorer` scores each poster with the shard
    that learnt it. ``version`` is the total number of examples. ``None``
    when no shard has learnt anything.
    """
    live = [dict(e) for e in exports if e.get("examples", 0) > 0]
    if not live:
        return None
    total = sum(e["examples"] for e in live)
    return {
        "shards": live,
        "n_factors": live[0]["n_factors"],
        "version": total,
        "examples": total,
        "labels": "fake_negative",
    }
