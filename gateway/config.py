"""Business-rule and experiment configuration, versioned in Redis.

Both live in a hash ``{p}:config:{name}`` (``rules``, ``experiments``) with the
fields ``version`` (an integer that only grows), ``data`` (the JSON document)
and ``updated_ms``. An update is a compare-and-set on ``version`` inside a
Redis transaction, so two administrators cannot silently overwrite each other:
the loser gets a conflict and re-reads. Each gateway process re-reads the
version every ``gateway_cache_s`` seconds, never per request.

Rules have defaults in code for every placement; the stored document holds
only overrides (``{"default": {...}, "placements": {"search": {...}}}``), so a
field added in a later release gets its default where nobody overrode it.

Examples
--------
>>> rules = RulesDocument()
>>> rules.for_placement("search").exposure_cap_share
0.6
>>> RulesDocument(placements={"search": {"mmr_lambda": 0.0}}).for_placement(
...     "search").mmr_lambda
0.0
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

__all__ = [
    "ConfigConflict",
    "ExperimentsDocument",
    "RuleConfig",
    "RulesDocument",
    "Variant",
    "load_document",
    "store_document",
]


MAX_COUNT = 10**12
"""Largest impression threshold a rule takes (far beyond any real catalog)."""


class RuleConfig(BaseModel):
    """The business rules of one placement; each rule turns off at its neutral
    value (a share or factor of 1, a lambda or share of 0).

    Every field is finite and bounded: a value the gateway cannot turn into a
    time or a Redis integer is refused here, not met later as a failed read.
    Numbers are strict: ``"0.5"`` or ``true`` is refused, not converted (and
    then stored as sent); documents stored before that are still read, see
    :func:`load_document`.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, strict=True
    )

    exposure_cap_share: float = Field(
        0.6,
        gt=0,
        le=1,
        description="Most share of a video's impressions one poster may take "
        "in the window; a poster above it is not served (1: off).",
    )
    exposure_window_s: float = Field(
        3600.0, gt=0, le=86_400, description="Window of the exposure cap."
    )
    exposure_min_impressions: int = Field(
        100,
        ge=0,
        le=MAX_COUNT,
        description="The cap applies once the video has this many impressions "
        "in the window (too few to judge a share before).",
    )
    deweight_factor: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Score multiplier of posters this user saw recently for "
        "this video (1: off).",
    )
    deweight_recency_s: float = Field(
        3 * 86_400.0,
        gt=0,
        le=365 * 86_400,
        description="How long a seen poster stays deweighted.",
    )
    mmr_lambda: float = Field(
        0.3,
        ge=0,
        le=1,
        description="Weight of dissimilarity to posters already placed in the "
        "row (maximal marginal relevance; 0: off).",
    )
    ramp_min_impressions: int = Field(
        200,
        ge=0,
        le=MAX_COUNT,
        description="A poster with fewer all-time impressions is new and gets "
        "the ramp-up share.",
    )
    ramp_share: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Share of decisions that pick uniformly among new posters "
        "(0: off).",
    )
    retire_min_impressions: int = Field(
        1000,
        ge=1,
        le=MAX_COUNT,
        description="All-time impressions before a poster can be demoted or retired.",
    )
    demote_at: float = Field(
        0.95,
        ge=0.5,
        lt=1,
        description="Posterior probability that the poster's click-through rate "
        "is below the video's best at which it is demoted.",
    )
    retire_at: float = Field(
        0.99,
        ge=0.5,
        lt=1,
        description="The same probability at which it is retired, when its "
        "anytime-valid upper bound is also below the best's lower bound.",
    )
    retire_margin: float = Field(
        0.001,
        ge=0,
        le=1,
        description="Click-rate gap between those bounds needed to retire.",
    )
    demote_factor: float = Field(
        0.5, gt=0, le=1, description="Score multiplier of a demoted poster."
    )
    scene_boost: float = Field(
        1.5,
        ge=1,
        le=100,
        description="Score multiplier of posters whose tags match a UI text cue "
        "shown near the slot (1: off).",
    )

    @model_validator(mode="after")
    def _check_retirement(self) -> RuleConfig:
        if self.retire_at < self.demote_at:
            raise ValueError("retire_at must be at least demote_at")
        return self


class RulesDocument(BaseModel):
    """Overrides of the rule defaults, for every placement and per placement."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    name: ClassVar[str] = "rules"

    default: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides for every placement.",
        examples=[{"mmr_lambda": 0.2}],
    )
    placements: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Overrides per placement id, applied after ``default``.",
        examples=[{"search": {"exposure_cap_share": 0.5}}],
    )

    @model_validator(mode="before")
    @classmethod
    def _convert_stored(cls, data: Any, info: ValidationInfo) -> Any:
        """Numbers of a stored document converted (``"0.5"`` to 0.5), see
        :func:`load_document`; the overrides keep only the types of the rules."""
        if not (info.context or {}).get("stored") or not isinstance(data, dict):
            return data
        default, placements = data.get("default", {}), data.get("placements", {})
        if not isinstance(default, dict) or not isinstance(placements, dict):
            return data  # left for the checks to report
        return {
            **data,
            "default": _converted(default, default),
            "placements": {
                name: _converted(default, overrides)
                for name, overrides in placements.items()
            },
        }

    @model_validator(mode="after")
    def _check_each(self) -> RulesDocument:
        from gateway.placements import PLACEMENTS

        _check_rules(self.default, ("default",))
        for placement, overrides in self.placements.items():
            where = ("placements", placement)
            if placement not in PLACEMENTS:
                raise _located(
                    where, "unknown placement; known: " + ", ".join(PLACEMENTS)
                )
            _check_rules({**self.default, **overrides}, where)
        return self

    def for_placement(self, placement: str) -> RuleConfig:
        """The effective rules of ``placement``: defaults, then overrides."""
        return RuleConfig(**{**self.default, **self.placements.get(placement, {})})


def _converted(default: dict[str, Any], overrides: Any) -> Any:
    """``overrides`` with values of the rules' types, as lax validation gives."""
    if not isinstance(overrides, dict):
        return overrides
    try:
        config = RuleConfig.model_validate({**default, **overrides}, strict=False)
    except ValidationError:
        return overrides  # left for the checks to report
    return {
        name: getattr(config, name) if name in RuleConfig.model_fields else value
        for name, value in overrides.items()
    }


def _check_rules(values: dict[str, Any], where: tuple[str, ...]) -> None:
    """Validate ``values`` as a :class:`RuleConfig`; errors located at ``where``.

    The overrides are plain mappings (only what was overridden is stored), so
    pydantic validates them here rather than as fields; without the prefix,
    an error in ``placements.search`` would be reported at the document's
    top, as if ``mmr_lambda`` were a field of it.
    """
    try:
        RuleConfig(**values)
    except ValidationError as error:
        lines: list[Any] = [
            {**item, "loc": (*where, *item["loc"])}
            for item in error.errors(include_url=False)
        ]
        raise ValidationError.from_exception_data(error.title, lines) from None


def _located(where: tuple[str, ...], message: str) -> ValidationError:
    """A validation error at ``where`` inside the document."""
    return ValidationError.from_exception_data(
        "RulesDocument",
        [
            {
                "type": "value_error",
                "loc": where,
                "input": where[-1],
                "ctx": {"error": ValueError(message)},
            }
        ],
    )


class Variant(BaseModel):
    """One arm of the experiment: a policy and the share of users it serves."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, strict=True
    )

    name: str = Field(
        ...,
        pattern=r"^[A-Za-z0-9_.-]{1,40}$",
        description="Variant id.",
        examples=["ts"],
    )
    policy: str = Field(
        ...,
        description="Policy name: thompson, thompson_alltime, ucb1, "
        "epsilon_greedy, linucb, fm or random.",
        examples=["thompson"],
    )
    weight: float = Field(
        ..., gt=0, le=1e6, description="Relative traffic share.", examples=[0.4]
    )

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, value: str) -> str:
        if value not in POLICY_NAMES:
            raise ValueError(f"unknown policy {value!r}; known: {POLICY_NAMES}")
        return value


POLICY_NAMES = (
    "thompson",
    "thompson_alltime",
    "ucb1",
    "epsilon_greedy",
    "linucb",
    "fm",
    "random",
)


class ExperimentsDocument(BaseModel):
    """The traffic split: users hash into variants by ``salt`` and weight."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    name: ClassVar[str] = "experiments"

    salt: str = Field(
        "keyart-1",
        min_length=1,
        max_length=64,
        description="Mixed into the user hash; a new salt reshuffles everyone.",
    )
    variants: list[Variant] = Field(
        default_factory=lambda: [
            Variant(name="control", policy="random", weight=0.1),
            Variant(name="ts", policy="thompson", weight=0.6),
            Variant(name="linucb", policy="linucb", weight=0.3),
        ],
        min_length=1,
        max_length=32,
        description="Variants in the order their ranges of the user line are "
        "laid out; new weights move only the users between old and new "
        "boundaries.",
    )

    @field_validator("variants")
    @classmethod
    def _unique(cls, value: list[Variant]) -> list[Variant]:
        names = [v.name for v in value]
        if len(set(names)) != len(names):
            raise ValueError("variant names must be unique")
        return value


class ConfigConflict(RuntimeError):
    """The stored version moved since the caller read it."""


async def load_document(
    redis: Any, key: str, model: type[BaseModel]
) -> tuple[BaseModel, int]:
    """Read a versioned document; the defaults at version 0 when none is stored.

    A stored document that no longer validates (written by a newer release)
    raises ``ValueError`` naming the key, and the caller keeps what it had.
    It is read without strict numbers, converted: an update checks them, but
    a release before that took ``"0.5"`` and stored it as sent.
    """
    raw = await redis.hmget(key, "version", "data")
    if raw[0] is None or raw[1] is None:
        return model(), 0
    try:
        document = orjson.loads(raw[1])
        stored = model.model_validate(document, strict=False, context={"stored": True})
        return stored, int(raw[0])
    except ValueError as error:
        raise ValueError(f"{key} holds an invalid document: {error}") from None


async def store_document(
    redis: Any, key: str, document: BaseModel, expected_version: int | None
) -> int:
    """Store ``document`` as the next version and return it.

    Raises
    ------
    ConfigConflict
        When ``expected_version`` is given and the stored one differs.
    """
    from redis.exceptions import WatchError

    async with redis.pipeline(transaction=True) as pipe:
        try:
            await pipe.watch(key)
            current = int(await pipe.hget(key, "version") or 0)
            if expected_version is not None and current != expected_version:
                raise ConfigConflict(
                    f"version is {current}, not {expected_version}: re-read and retry"
                )
            pipe.multi()
            pipe.hset(
                key,
                mapping={
                    "version": current + 1,
                    "data": orjson.dumps(document.model_dump(mode="json")),
                    "updated_ms": int(time.time() * 1000),
                },
            )
            await pipe.execute()
        except WatchError:
            raise ConfigConflict("changed while storing: re-read and retry") from None
    return current + 1
