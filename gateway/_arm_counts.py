"""Arm statistics of a row's candidates as a ``(k, 4)`` count matrix.

A video's arm hash changes when the learner flushes, about once a second,
while a busy video is read by many rows in that second. Parsing the packed
values (``impressions,clicks,window impressions,window clicks``) took about a
twentieth of a row's CPU, so each distinct packed value is parsed once and
kept, up to :data:`MAX_VALUES` values (then the memory starts over).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["ArmCounts"]

MAX_VALUES = 100_000
_ABSENT = (0.0, 0.0, 0.0, 0.0)


class ArmCounts:
    """Parse packed arm statistics, remembering each distinct value.

    Examples
    --------
    >>> ArmCounts().matrix([b"10,2,5,1", None])
    array([[10.,  2.,  5.,  1.],
           [ 0.,  0.,  0.,  0.]])
    """

    def __init__(self) -> None:
        self._values: dict[bytes, tuple[float, ...]] = {}

    def _parse(self, raw: bytes) -> tuple[float, ...]:
        counts = tuple(map(float, raw.split(b",")))
        if len(counts) != 4:
            raise ValueError("arm statistics need 4 counts each")
        if len(self._values) >= MAX_VALUES:
            self._values.clear()
        self._values[raw] = counts
        return counts

    def matrix(self, raw: Sequence[bytes | None]) -> np.ndarray:
        """``(k, 4)`` float counts; an absent or empty value counts zeros.

        Raises
        ------
        ValueError
            For a value that is not four numbers separated by commas.
        """
        get, parse = self._values.get, self._parse
        rows = [(get(r) or parse(r)) if r else _ABSENT for r in raw]
        return np.array(rows, dtype=np.float64).reshape(len(raw), 4)
