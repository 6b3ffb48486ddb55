"""Request and response bodies of the gateway's HTTP API (OpenAPI documented)."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from gateway.placements import PLACEMENTS

__all__ = [
    "ClickIn",
    "EventError",
    "EventsResponse",
    "ID_PATTERN",
    "MAX_CONTEXT_KEYS",
    "MAX_CONTEXT_VALUE",
    "ImpressionIn",
    "REFUSED",
    "FieldError",
    "Refusal",
    "SelectRequest",
    "SelectResponse",
    "Slot",
]

ID_PATTERN = r"^[A-Za-z0-9._:@/+=~-]{1,128}$"
"""Ids are 1-128 characters: letters, digits and ``. _ : @ / + = ~ -``."""

Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]

MAX_CONTEXT_KEYS = 64
"""Most context features in one select request or impression."""

MAX_CONTEXT_VALUE = 1e6
"""Largest magnitude of a context feature: the learner's LinUCB and FM models
add products of features, so one huge value would overflow the shared model."""

ContextKey = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f]+$")
]


def _bounded_context(value: dict[str, float]) -> dict[str, float]:
    for key, number in value.items():
        if not math.isfinite(number):
            raise ValueError(f"context feature {key!r} is not finite")
        if abs(number) > MAX_CONTEXT_VALUE:
            raise ValueError(
                f"context feature {key!r} is {number:g}, beyond "
                f"+/-{MAX_CONTEXT_VALUE:g}"
            )
    return value


Context = Annotated[
    dict[ContextKey, float],
    Field(max_length=MAX_CONTEXT_KEYS),
    AfterValidator(_bounded_context),
]


class SelectRequest(BaseModel):
    """Which poster to show for each title of a row.

    This and the event bodies are strict: a string or a boolean where a
    number belongs is refused rather than converted, as it is a client bug
    that would otherwise feed the learner a feature or a time nobody meant.
    """

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "user_id": "u-1842",
                    "placement": "home_row",
                    "video_ids": ["v-101", "v-102", "v-103"],
                    "context": {"hour_sin": 0.5, "is_tv": 0.0},
                    "cues": ["Keanu Reeves"],
                }
            ]
        },
    )

    user_id: Id = Field(..., description="The viewer's id (pseudonymous).")
    placement: str = Field(
        ...,
        description="Where the row is drawn: " + ", ".join(PLACEMENTS) + ".",
        examples=["home_row"],
    )
    video_ids: list[Id] = Field(
        ...,
        min_length=1,
        description="Titles of the row, in display order (at most the "
        "max_row_length setting, no repeats).",
    )
    context: Context = Field(
        default_factory=dict,
        description="Numeric user context features (LinUCB and FM use them): "
        "at most 64, each finite with magnitude at most 1e6.",
    )
    cues: list[Annotated[str, StringConstraints(max_length=200)]] = Field(
        default_factory=list,
        max_length=32,
        description="Text shown near the slots (actor names, a genre), matched "
        "against poster tags by the scene-match rule.",
    )
    segment: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{0,64}$")] = (
        Field("", description="The user's segment, when arms are split by segment.")
    )
    request_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._-]{0,64}$")] = (
        Field("", description="Caller's id of the request, copied to decisions.")
    )

    @field_validator("placement")
    @classmethod
    def _known_placement(cls, value: str) -> str:
        if value not in PLACEMENTS:
            raise ValueError(f"unknown placement; known: {', '.join(PLACEMENTS)}")
        return value

    @field_validator("video_ids")
    @classmethod
    def _no_repeats(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a video appears twice in the row")
        return value


class Slot(BaseModel):
    """The answer for one title of the row."""

    video_id: str = Field(..., description="The title, as requested.")
    poster_id: str | None = Field(
        ..., description="Chosen poster; null when the title has none to show."
    )
    image_url: str | None = Field(..., description="Where the client loads it.")
    token: str | None = Field(
        ...,
        description="Signed impression token: send it back with the impression "
        "and click events of this poster.",
    )
    propensity: float = Field(
        ...,
        description="Probability the whole choice procedure had of choosing "
        "this poster.",
    )
    fallback: bool = Field(
        False, description="True when live state was unavailable (see reason)."
    )
    reason: str | None = Field(
        None, description="Why the answer is a fallback or empty."
    )


class SelectResponse(BaseModel):
    """Posters for a row, one slot per requested title in the same order."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "request_id": "r-77",
                    "variant": "ts",
                    "policy": "thompson",
                    "experiment_version": 3,
                    "slots": [
                        {
                            "video_id": "v-101",
                            "poster_id": "p-9",
                            "image_url": "/posters/v-101/p-9.jpg",
                            "token": "WzEsImQtLi4uIl0.ZmFrZS1tYWM",
                            "propensity": 0.62,
                            "fallback": False,
                            "reason": None,
                        }
                    ],
                }
            ]
        }
    )

    request_id: str = Field(..., description="The caller's or a generated id.")
    variant: str = Field(..., description="Experiment variant serving this user.")
    policy: str = Field(..., description="Policy of that variant.")
    experiment_version: int = Field(..., description="Version of the split used.")
    slots: list[Slot]


class ImpressionIn(BaseModel):
    """A poster the client drew on screen."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["impression"]
    event_id: Id = Field(..., description="Unique id; resending it is harmless.")
    event_time: int = Field(
        ...,
        ge=0,
        description="When it was shown, milliseconds since the epoch; within "
        "KEYART_COLLECT_CLOCK_SKEW_S of the collector's clock ahead and of the "
        "token's issue behind, and at most the learner's windows old (30 min by "
        "default).",
    )
    token: str = Field(..., max_length=4096, description="The slot's impression token.")
    context: Context = Field(
        default_factory=dict,
        description="The user context sent with the select request (same bounds).",
    )


class ClickIn(BaseModel):
    """A click on a shown poster."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["click"]
    event_id: Id = Field(..., description="Unique id; resending it is harmless.")
    event_time: int = Field(
        ...,
        ge=0,
        description="Milliseconds since the epoch, within the same bounds as an "
        "impression's.",
    )
    token: str = Field(
        ..., max_length=4096, description="The impression token of that poster."
    )
    impression_id: Id = Field(..., description="event_id of the impression.")


EVENT_EXAMPLE: dict[str, Any] = {
    "events": [
        {
            "type": "impression",
            "event_id": "i-5f2c",
            "event_time": 1_760_000_000_000,
            "token": "<token from /v1/select>",
        },
        {
            "type": "click",
            "event_id": "c-77aa",
            "event_time": 1_760_000_004_000,
            "token": "<token from /v1/select>",
            "impression_id": "i-5f2c",
        },
    ]
}


class EventError(BaseModel):
    """Why one event of a batch was not taken."""

    index: int = Field(..., description="Position of the event in the batch.")
    reason: str = Field(..., description="What is wrong, naming the field.")
    retry: bool = Field(
        False, description="True when resending the same event later may work."
    )


class EventsResponse(BaseModel):
    """Outcome of a batch: every event not listed in errors was taken."""

    accepted: int = Field(..., description="Events produced to the broker now.")
    duplicates: int = Field(..., description="Events whose id was already taken.")
    errors: list[EventError] = Field(default_factory=list)


class FieldError(BaseModel):
    """One fault of a refused request."""

    field: str = Field(..., description="Dotted path of the field, or body.")
    message: str = Field(..., description="What is wrong there.")


class Refusal(BaseModel):
    """The body of every refused request (``gateway._errors.refusal``)."""

    detail: str = Field(..., description="The first fault, as ``field: message``.")
    errors: list[FieldError] = Field(..., description="Every fault found.")


REFUSED: dict[int | str, dict[str, Any]] = {
    422: {"model": Refusal, "description": "A field is invalid; detail names it."}
}
"""The 422 of every route, as answered: FastAPI would document its own
``HTTPValidationError`` (``detail`` a list), which the gateway never sends."""
