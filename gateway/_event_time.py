"""Which event times the collector takes from a client.

An event's time comes from the client's clock, which may be off the gateway's
by ``collect_clock_skew_s``. The learner orders events by their time: the
partition clock is the newest impression time, and a click that waits for its
impression is given up once that clock is a minute past the click. An
impression dated ahead therefore costs the clicks of every video on its
partition, so an event dated more than the skew after the collector's clock is
refused.

Examples
--------
>>> from keyart.settings import Settings
>>> bounds = EventTimeBounds(Settings(collect_clock_skew_s=60))
>>> bounds.reason(1_000_030_000, now_ms=1_000_000_000) is None
True
>>> print(bounds.reason(1_000_090_000, now_ms=1_000_000_000))  # doctest: +ELLIPSIS
event_time: in the future, 90 s after the collector clock (at most 60 s, ...)
"""

from __future__ import annotations

from keyart.settings import Settings

__all__ = ["EventTimeBounds"]


class EventTimeBounds:
    """The range of event times the collector takes, from the settings.

    Parameters
    ----------
    settings
        ``collect_clock_skew_s`` bounds how far ahead an event may be dated.
    """

    def __init__(self, settings: Settings) -> None:
        self.skew_ms = round(settings.collect_clock_skew_s * 1000)

    def reason(self, event_time: int, now_ms: int) -> str | None:
        """Why ``event_time`` is refused at ``now_ms``, naming the bound; or None."""
        if event_time > now_ms + self.skew_ms:
            return (
                f"event_time: in the future, {(event_time - now_ms) / 1000:.0f} s "
                f"after the collector clock (at most {self.skew_ms / 1000:g} s, "
                "KEYART_COLLECT_CLOCK_SKEW_S)"
            )
        return None
