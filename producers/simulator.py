"""A synthetic click model over real users and real posters, with its oracle.

The users are MovieLens-100k's (:mod:`producers.users`); the posters are the
ones the workers made from real video, described by the features the workers
measured (faces, close-up, colour mood, text, quality). Whether a user clicks
is decided by a hidden model that is **synthetic**: its form and weights are
made up here so that the right poster depends on who is looking, and nothing
in it was fitted to real viewers.

The model, on the logit scale, for user ``u`` and poster ``p`` of a video::

    logit P(click) = logit(base_ctr) + appeal[p] + drift[p](t)
                     + 2 tanh( sum_k w_k(u) * z_k(p) / 2 )

``z_k(p)`` are the poster's traits standardised over the posters of its
video (so that the model has the same spread whatever scale the workers'
features use and however alike a video's frames are), and
``w_k(u)`` are weights by age band, gender and occupation group
(:data:`TRAIT_WEIGHTS`). ``appeal[p]`` is a poster's own appeal, drawn once
per poster from the seed and the poster's features. A shown poster is looked
at with a probability that falls with its position in the row; a click comes
after a log-normal delay (seconds to minutes; some fall after the attribution
window), and a share of events is delivered twice. With drift, at
``drift_at_s`` each video's best poster loses ``drift_shift`` logits and its
worst gains ``drift_rise``.

:class:`Oracle` gives the expected click-through rate of every user and poster
at any time, from which the demo computes regret.

Examples
--------
>>> from producers.users import SimUser
>>> catalog = {"p1": {"face_count": 1.0}, "p2": {"face_count": 0.0}}
>>> model = ClickModel(catalog, ClickParams(seed=1))
>>> young = SimUser("u", 22, "F", "student")
>>> model.ctr(young, "p1", 0.0) > model.ctr(young, "p2", 0.0)
True
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from producers.users import SimUser

__all__ = [
    "TRAITS",
    "TRAIT_WEIGHTS",
    "ClickModel",
    "ClickParams",
    "Oracle",
    "SimClick",
    "TrafficSimulator",
    "poster_traits",
]

TRAITS = ("faces", "closeup", "warmth", "brightness", "text", "quality")

# Feature names the workers may use for each trait, first match wins.
_TRAIT_SOURCES: dict[str, tuple[str, ...]] = {
    "faces": ("face_count",),
    "closeup": ("largest_face_share",),
    "warmth": ("warmth",),
    "brightness": ("brightness",),
    "text": ("text_share",),
    "quality": ("quality",),
}
"""Which feature of :mod:`workers.features` each trait reads."""

# Synthetic weights (logit per standard deviation of a trait) by user trait.
TRAIT_WEIGHTS: dict[str, dict[str, float]] = {
    "faces": {"age_lt18": 0.7, "age_18_29": 0.6, "age_30_44": 0.1, "age_ge45": -0.4},
    "closeup": {"gender_f": 0.4, "gender_m": -0.2, "occ_arts": 0.3},
    "warmth": {"age_ge45": 0.5, "age_30_44": 0.2, "age_18_29": -0.3},
    "brightness": {"gender_f": 0.3, "occ_student": -0.3, "occ_office": 0.2},
    "text": {"occ_tech": 0.6, "occ_student": 0.3, "age_ge45": -0.5},
    "quality": {"all": 0.25},
}


def poster_traits(features: Mapping[str, float]) -> dict[str, float]:
    """The click model's traits of a poster from its catalog features.

    A missing feature gives a neutral 0.
    """
    out = {}
    for trait, names in _TRAIT_SOURCES.items():
        value = next((features[n] for n in names if n in features), 0.0)
        out[trait] = float(value) if math.isfinite(float(value)) else 0.0
    return out


def _looks(features: Mapping[str, float]) -> str:
    """A stable text of a poster's features (3 decimals), to seed its appeal."""
    return "|".join(f"{k}={float(features[k]):.3f}" for k in sorted(features))


def _user_keys(user: SimUser) -> set[str]:
    keys = {"all", user.age_band, f"occ_{user.group}"}
    keys.add("gender_f" if user.gender == "F" else "gender_m")
    return keys


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@dataclass(frozen=True)
class ClickParams:
    """Parameters of the synthetic click model; logged with every run."""

    seed: int = 7
    base_ctr: float = 0.03
    appeal_sd: float = 0.3
    trait_scale: float = 2.5
    position_decay: float = 0.15
    delay_median_s: float = 6.0
    delay_sigma: float = 1.5
    duplicate_rate: float = 0.02
    drift_at_s: float | None = None
    drift_shift: float = -1.5
    """Logits each video's best poster loses at the drift."""
    drift_rise: float = 1.5
    """Logits each video's worst poster gains at the drift: the poster that
    counts gathered before it call the worst becomes worth showing."""

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


class ClickModel:
    """The hidden click model over a fixed catalog of posters.

    Parameters
    ----------
    catalog
        Poster id -> its features (as the workers wrote them).
    params
        Weights, rates and the seed.
    poster_to_video
        Poster id -> video id; drift picks the best poster of each video.
    reference_users
        The population over which drift finds each video's best poster.
    """

    def __init__(
        self,
        catalog: Mapping[str, Mapping[str, float]],
        params: ClickParams | None = None,
        poster_to_video: Mapping[str, str] | None = None,
        reference_users: Sequence[SimUser] = (),
    ) -> None:
        self.params = params or ClickParams()
        self.posters = sorted(catalog)
        self.poster_to_video = dict(poster_to_video or dict.fromkeys(self.posters, ""))
        # Traits are standardised among each video's own posters: a policy only
        # ever chooses between those, and the model should give every video
        # the same spread of taste however alike its frames look.
        self._z: dict[str, np.ndarray] = {}
        by_video: dict[str, list[str]] = {}
        for poster in self.posters:
            by_video.setdefault(self.poster_to_video.get(poster, ""), []).append(poster)
        for members in by_video.values():
            raw = np.array(
                [[poster_traits(catalog[p])[t] for t in TRAITS] for p in members]
            ).reshape(len(members), len(TRAITS))
            spread = raw.std(axis=0)
            spread[spread == 0] = 1.0
            z = np.clip((raw - raw.mean(axis=0)) / spread, -1.5, 1.5)
            self._z.update((p, z[i]) for i, p in enumerate(members))
        # Each poster's own appeal depends only on the seed and what the poster
        # looks like (its measured features), not on its id, which changes
        # with every production job: the same video gives the same model.
        self.appeal = {
            p: float(
                np.random.default_rng(
                    [self.params.seed, zlib.crc32(_looks(catalog[p]).encode())]
                ).normal(0.0, self.params.appeal_sd)
            )
            for p in self.posters
        }
        self.drifted: dict[str, float] = {}
        if self.params.drift_at_s is not None:
            self.drifted = self._drift_targets(reference_users)

    def _weights(self, user: SimUser) -> np.ndarray:
        keys = _user_keys(user)
        return self.params.trait_scale * np.array(
            [sum(w for k, w in TRAIT_WEIGHTS[t].items() if k in keys) for t in TRAITS]
        )

    def logit(self, user: SimUser, poster: str, t_s: float) -> float:
        value = _logit(self.params.base_ctr) + self.appeal[poster]
        # The user x poster term is squashed to at most +-2 logits, so no pair
        # reaches an implausible rate.
        value += 2.0 * math.tanh(float(self._weights(user) @ self._z[poster]) / 2.0)
        drift_at = self.params.drift_at_s
        if drift_at is not None and t_s >= drift_at:
            value += self.drifted.get(poster, 0.0)
        return value

    def ctr(self, user: SimUser, poster: str, t_s: float) -> float:
        """Probability that ``user`` clicks ``poster`` when looking at it."""
        return _sigmoid(self.logit(user, poster, t_s))

    def mean_ctr(self, users: Sequence[SimUser], poster: str, t_s: float) -> float:
        """A poster's click-through rate averaged over ``users``."""
        return float(np.mean([self.ctr(u, poster, t_s) for u in users]))

    def _drift_targets(self, users: Sequence[SimUser]) -> dict[str, float]:
        # Each video's best poster (over ``users``, else by its own appeal)
        # loses appeal mid-run and its worst gains some.
        def score(poster: str) -> float:
            if users:
                return self.mean_ctr(users, poster, 0.0)
            return self.appeal[poster]

        by_video: dict[str, list[tuple[float, str]]] = {}
        for poster in self.posters:
            video = self.poster_to_video.get(poster, "")
            by_video.setdefault(video, []).append((score(poster), poster))
        out = {}
        for ranked in by_video.values():
            ranked.sort()
            if len(ranked) > 1:
                out[ranked[0][1]] = self.params.drift_rise
            out[ranked[-1][1]] = self.params.drift_shift
        return out


class Oracle:
    """Expected click-through rates under the hidden model, for regret."""

    def __init__(self, model: ClickModel) -> None:
        self.model = model

    def headroom(
        self, users: Sequence[SimUser], posters: Sequence[str], t_s: float = 0.0
    ) -> dict[str, float]:
        """Mean CTR over ``users`` of a uniformly random poster, of the best
        single poster, and of each user's own best: how much a context-free and
        a contextual policy can gain at most."""
        rates = np.array([[self.model.ctr(u, p, t_s) for p in posters] for u in users])
        return {
            "random": float(rates.mean()),
            "best_single": float(rates.mean(axis=0).max()),
            "per_user_best": float(rates.max(axis=1).mean()),
        }

    def expected(self, user: SimUser, poster: str, t_s: float) -> float:
        return self.model.ctr(user, poster, t_s)

    def best(
        self, user: SimUser, posters: Sequence[str], t_s: float
    ) -> tuple[str, float]:
        """The poster among ``posters`` this user is likeliest to click, and its
        click-through rate."""
        scored = [(self.model.ctr(user, p, t_s), p) for p in posters]
        ctr, poster = max(scored)
        return poster, ctr

    def regret(
        self, user: SimUser, chosen: str, posters: Sequence[str], t_s: float
    ) -> float:
        """Expected clicks lost by showing ``chosen`` instead of the best."""
        return self.best(user, posters, t_s)[1] - self.model.ctr(user, chosen, t_s)


@dataclass(frozen=True)
class SimClick:
    """A click the simulator will send ``delay_s`` after the impression."""

    video_id: str
    poster_id: str
    position: int
    delay_s: float
    duplicate: bool = False


@dataclass
class TrafficSimulator:
    """Draws users and their clicks; owns its random generator.

    Examples
    --------
    >>> from producers.users import SimUser
    >>> sim = TrafficSimulator([SimUser("u", 30, "M", "writer")],
    ...     ClickModel({"p": {}}, ClickParams(base_ctr=0.5)))
    >>> sim.draw_user().user_id
    'u'
    """

    users: Sequence[SimUser]
    model: ClickModel
    generator: np.random.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.generator = np.random.default_rng(self.model.params.seed)

    @property
    def params(self) -> ClickParams:
        return self.model.params

    def draw_user(self) -> SimUser:
        return self.users[int(self.generator.integers(len(self.users)))]

    def look_probability(self, position: int) -> float:
        """Chance a user looks at the poster in row position ``position`` (0 first)."""
        return 1.0 / (1.0 + self.params.position_decay * position)

    def respond(
        self, user: SimUser, shown: Sequence[tuple[str, str]], t_s: float
    ) -> list[SimClick]:
        """The clicks ``user`` makes on a row of (video, poster) shown at ``t_s``."""
        clicks = []
        for position, (video, poster) in enumerate(shown):
            p = self.look_probability(position) * self.model.ctr(user, poster, t_s)
            if self.generator.random() >= p:
                continue
            delay = float(
                self.params.delay_median_s
                * math.exp(self.params.delay_sigma * self.generator.standard_normal())
            )
            clicks.append(SimClick(video, poster, position, delay))
            if self.generator.random() < self.params.duplicate_rate:
                clicks.append(SimClick(video, poster, position, delay + 1.0, True))
        return clicks

    def duplicate_impression(self) -> bool:
        """Whether the client delivers an impression twice (at-least-once)."""
        return bool(self.generator.random() < self.params.duplicate_rate)
