"""Simulated viewers drawn from MovieLens-100k's 943 real users.

Each user keeps the age, gender and occupation MovieLens recorded. The
gateway sees them as a small numeric context (age bands, gender, occupation
groups), which is what the contextual policies learn from.

Examples
--------
>>> u = SimUser("ml-1", 24, "M", "technician")
>>> sorted(k for k, v in u.context().items() if v)
['age_18_29', 'bias', 'occ_tech']
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

__all__ = ["CONTEXT_NAMES", "OCCUPATION_GROUPS", "SimUser", "load_users"]

USERS_ASSET = "ml100k_users.parquet.brotli"

OCCUPATION_GROUPS: dict[str, str] = {
    "student": "student",
    "programmer": "tech",
    "engineer": "tech",
    "technician": "tech",
    "scientist": "tech",
    "artist": "arts",
    "writer": "arts",
    "entertainment": "arts",
    "librarian": "arts",
    "educator": "office",
    "administrator": "office",
    "executive": "office",
    "marketing": "office",
    "salesman": "office",
    "lawyer": "office",
    "doctor": "office",
    "healthcare": "office",
}
"""Occupation -> group; every other occupation (other, retired, none,
homemaker) is ``other``."""

AGE_BANDS = ((0, 18, "age_lt18"), (18, 30, "age_18_29"), (30, 45, "age_30_44"))
CONTEXT_NAMES = (
    "bias",
    "age_lt18",
    "age_18_29",
    "age_30_44",
    "age_ge45",
    "gender_f",
    "occ_student",
    "occ_tech",
    "occ_arts",
    "occ_office",
)


@dataclass(frozen=True)
class SimUser:
    """A MovieLens user as the simulator and the gateway see them."""

    user_id: str
    age: int
    gender: str
    occupation: str

    @property
    def group(self) -> str:
        """The occupation group (student, tech, arts, office or other)."""
        return OCCUPATION_GROUPS.get(self.occupation, "other")

    @property
    def age_band(self) -> str:
        for low, high, name in AGE_BANDS:
            if low <= self.age < high:
                return name
        return "age_ge45"

    @cached_property
    def _context(self) -> dict[str, float]:
        out = dict.fromkeys(CONTEXT_NAMES, 0.0)
        out["bias"] = 1.0
        out[self.age_band] = 1.0
        out["gender_f"] = 1.0 if self.gender == "F" else 0.0
        if self.group != "other":
            out[f"occ_{self.group}"] = 1.0
        return out

    def context(self) -> dict[str, float]:
        """Numeric context the gateway receives with a request (a copy)."""
        return dict(self._context)


def load_users(path: Path | None = None) -> list[SimUser]:
    """The 943 MovieLens-100k users (fetched from the registry when needed).

    Raises
    ------
    ValueError
        When the file lacks one of ``user_id, age, gender, occupation``.
    """
    import pandas as pd

    if path is None:
        from keyart.data import fetch

        path = fetch(USERS_ASSET)
    frame = pd.read_parquet(path)
    missing = sorted({"user_id", "age", "gender", "occupation"} - set(frame.columns))
    if missing:
        raise ValueError(f"{path}: MovieLens users lack columns {missing}")
    return [
        SimUser(f"ml-{int(r.user_id)}", int(r.age), str(r.gender), str(r.occupation))
        for r in frame.itertuples(index=False)
    ]
