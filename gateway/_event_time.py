"""Which event times the collector takes from a client.

An event's time comes from the client's clock, which may be off the gateway's
by ``collect_clock_skew_s``. The learner judges events by their time against
its partition clock, the newest impression time, so the collector takes an
event time only where the learner can still judge it:

* at most the skew after the collector's clock: a client clock further ahead
  is broken, and the learner dead-letters what is ``max_clock_skew_s`` ahead
  of its own (its partition clock follows an event dated ahead only up to
  ``CLOCK_LEAD_MS`` past the wall clock, so such an event costs no clicks);
* at least the skew before its token was issued: nothing is shown or clicked
  before the gateway chose the poster;
* no older than :attr:`EventTimeBounds.max_age_ms`: the learner forgets an
  event id ``dedupe_window_s`` after its time, and an impression
  ``attribution_window_s`` plus ``GRACE_MS`` after it. Older, a repeated id
  would count twice and the impression would expire before its click could be
  credited. A client's time may be the skew behind the truth, hence the
  skew is taken off both windows.

Examples
--------
>>> from keyart.settings import Settings
>>> bounds = EventTimeBounds(Settings(collect_clock_skew_s=60))
>>> now, issued = 1_700_000_000_000, 1_700_000_000_000 - 5_000
>>> bounds.reason(now + 30_000, issued, now) is None
True
>>> print(bounds.reason(now - 90_000, issued, now))  # doctest: +ELLIPSIS
event_time: 85 s before its token was issued (at most 60 s, ...)
>>> print(bounds.reason(now // 1000, issued, now))  # doctest: +ELLIPSIS
event_time: ... (at most 60 s, ...); it reads as seconds since the epoch, and ...
>>> bounds.max_age_ms // 1000
1800
"""

from __future__ import annotations

from keyart.settings import Settings, SettingsError
from streams.attribution import GRACE_MS

__all__ = ["EventTimeBounds"]

SKEW = "KEYART_COLLECT_CLOCK_SKEW_S"


class EventTimeBounds:
    """The range of event times the collector takes, from the settings.

    Parameters
    ----------
    settings
        ``collect_clock_skew_s`` bounds how far a client's clock may be off;
        ``dedupe_window_s`` and ``attribution_window_s`` how old an event may be.

    Raises
    ------
    SettingsError
        When the skew leaves no age the learner's windows can still judge.
    """

    def __init__(self, settings: Settings) -> None:
        self.skew_ms = round(settings.collect_clock_skew_s * 1000)
        windows_ms = min(
            round(settings.dedupe_window_s * 1000),
            round(settings.attribution_window_s * 1000) + GRACE_MS,
        )
        self.max_age_ms = windows_ms - self.skew_ms
        """Oldest an event may be: the shorter learner window, less the skew."""
        if self.max_age_ms <= 0:
            raise SettingsError(
                f"{SKEW}: {settings.collect_clock_skew_s:g} s leaves no event "
                "the learner can judge; keep it below KEYART_DEDUPE_WINDOW_S and "
                f"KEYART_ATTRIBUTION_WINDOW_S + {GRACE_MS // 1000} s"
            )

    def reason(self, event_time: int, issued_ms: int, now_ms: int) -> str | None:
        """Why ``event_time`` is refused, naming the bound; None when it is taken.

        ``issued_ms`` is when the event's token was issued, ``now_ms`` the
        collector's clock.
        """
        skew_s = f"{self.skew_ms / 1000:g} s"
        if event_time > now_ms + self.skew_ms:
            return (
                f"event_time: in the future, {(event_time - now_ms) / 1000:.0f} s "
                f"after the collector clock (at most {skew_s}, {SKEW})"
            )
        if event_time < issued_ms - self.skew_ms:
            why = (
                f"event_time: {(issued_ms - event_time) / 1000:.0f} s before its "
                f"token was issued (at most {skew_s}, {SKEW})"
            )
            as_ms = event_time * 1000
            if issued_ms - self.skew_ms <= as_ms <= now_ms + self.skew_ms:
                # `date +%s` and time.time() give seconds: say so rather than
                # leave a client puzzling over a gap of half a century.
                why += (
                    "; it reads as seconds since the epoch, and event_time is "
                    "in milliseconds"
                )
            return why
        if event_time < now_ms - self.max_age_ms:
            return (
                f"event_time: {(now_ms - event_time) / 1000:.0f} s old, more than "
                f"the {self.max_age_ms / 1000:g} s the learner can still dedupe "
                "and attribute (the shorter of KEYART_DEDUPE_WINDOW_S and "
                f"KEYART_ATTRIBUTION_WINDOW_S + {GRACE_MS // 1000} s, less {SKEW})"
            )
        return None
