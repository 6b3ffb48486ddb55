"""Arm statistics as the learner writes them to Redis and the gateway reads them.

One arm's statistics are four counts packed as ASCII, ``"n,c,wn,wc"``:
all-time impressions and clicks, then impressions and clicks inside the
sliding window. ASCII keeps the hash in Redis's compact listpack encoding
(a million arms stay well under 500 MB) and stays readable in ``redis-cli``.

Examples
--------
>>> s = ArmStats(10, 2, 4, 1)
>>> ArmStats.unpack(s.pack()) == s
True
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ArmStats"]


@dataclass(frozen=True, slots=True)
class ArmStats:
    """Counts of one arm (a poster of a video, maybe split by placement/segment)."""

    impressions: int = 0
    clicks: int = 0
    window_impressions: int = 0
    window_clicks: int = 0

    def pack(self) -> bytes:
        return (
            f"{self.impressions},{self.clicks},"
            f"{self.window_impressions},{self.window_clicks}"
        ).encode()

    @classmethod
    def unpack(cls, data: bytes | str | None) -> ArmStats:
        """Parse packed counts; ``None`` (no data yet) gives all zeros.

        Raises
        ------
        ValueError
            For text that is not four comma-separated integers.
        """
        if data is None:
            return cls()
        text = data.decode() if isinstance(data, bytes) else data
        parts = text.split(",")
        if len(parts) != 4:
            raise ValueError(f"arm statistics need 4 counts, got {text!r}")
        n, c, wn, wc = (int(p) for p in parts)
        return cls(n, c, wn, wc)
