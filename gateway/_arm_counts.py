"""Arm statistics of a row's candidates as a ``(k, 4)`` count matrix.

A video's arm hash changes when the learner flushes, about once a second,
while a busy video is read by many rows in that second. Parsing the packed
values (``impressions,clicks,window impressions,window clicks``) took about a
twentieth of a row's CPU, so each distinct packed value is parsed once and
kept, up to :data:`MAX_VALUES` values (then the memory starts over). A value
is kept as the bytes of its four float64 counts: a row's matrix is then one
join of those bytes, several times cheaper than building it from a hundred
tuples.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

import numpy as np

__all__ = ["ArmCounts"]

MAX_VALUES = 100_000
_ABSENT = array("d", (0.0, 0.0, 0.0, 0.0)).tobytes()


class ArmCounts:
    """Parse packed arm statistics, remembering each distinct value.

    Examples
    --------
    >>> ArmCounts().matrix([b"10,2,5,1", None])
    array([[10.,  2.,  5.,  1.],
           [ 0.,  0.,  0.,  0.]])
    """

    def __init__(self) -> None:
        self._values: dict[bytes, bytes] = {}

    def _parse(self, raw: bytes) -> bytes:
        counts = tuple(map(float, raw.split(b",")))
        if len(counts) != 4:
            raise ValueError("arm statistics need 4 counts each")
        if len(self._values) >= MAX_VALUES:
            self._values.clear()
        # array("d") holds C doubles, the same bytes as numpy's float64.
        packed = self._values[raw] = array("d", counts).tobytes()
        return packed

    def matrix(self, raw: Sequence[bytes | None]) -> np.ndarray:
        """``(k, 4)`` float counts; an absent or empty value counts zeros.

        Raises
        ------
        ValueError
            For a value that is not four numbers separated by commas.
        """
        get, parse = self._values.get, self._parse
        data = bytearray(
            b"".join([(get(r) or parse(r)) if r else _ABSENT for r in raw])
        )
        return np.frombuffer(data, dtype=np.float64).reshape(len(raw), 4)
