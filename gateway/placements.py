"""Placements: the slots a poster can be shown in, with their shape.

A poster fits a placement when its aspect ratio is the placement's, and, when
the poster lists placements, the placement is among them. Workers crop each
poster for one aspect; the list lets a reviewer keep a poster out of a slot
that its aspect would allow (a busy poster on a small search tile).

Examples
--------
>>> PLACEMENTS["home_row"].aspect
'2:3'
>>> fits(PLACEMENTS["search"], "16:9", [])
True
>>> fits(PLACEMENTS["search"], "2:3", [])
False
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PLACEMENTS", "Placement", "fits", "placement_names"]


@dataclass(frozen=True, slots=True)
class Placement:
    """A slot in a client's user interface.

    Attributes
    ----------
    name
        The id clients send (``home_row``).
    aspect
        Width:height of the posters it shows (``2:3``).
    width, height
        Size in pixels the poster is drawn at on a reference screen.
    description
        Where the slot is.
    """

    name: str
    aspect: str
    width: int
    height: int
    description: str


PLACEMENTS: dict[str, Placement] = {
    p.name: p
    for p in (
        Placement("home_row", "2:3", 342, 513, "Rows of titles on the home screen."),
        Placement("search", "16:9", 480, 270, "Tiles of search results."),
        Placement("detail", "16:9", 1920, 1080, "Large art on a title's page."),
        Placement("tv_grid", "16:9", 640, 360, "Grid of titles on television apps."),
        Placement("phone_row", "2:3", 228, 342, "Rows of titles on phones."),
        Placement("continue", "1:1", 300, 300, "Square tiles of Continue watching."),
    )
}


def placement_names() -> list[str]:
    """Every placement id, in a stable order."""
    return list(PLACEMENTS)


def fits(placement: Placement, aspect: str, placements: Sequence[str]) -> bool:
    """Whether a poster of ``aspect`` listing ``placements`` fits ``placement``."""
    if aspect != placement.aspect:
        return False
    return not placements or placement.name in placements
