"""Everything the learner knows about one partition, and how it learns.

A :class:`PartitionLearner` owns the arms of the videos on one partition of
the impression and click topics: their all-time and sliding-window counts,
the dedupe memory, pending impressions and waiting clicks, the partition's
LinUCB and FM shards and the next offset to apply on each topic. Applying a
batch never talks to Redis; :meth:`PartitionLearner.write` queues the changes
since the last flush on one ``MULTI/EXEC`` transaction, offsets included, and
:meth:`PartitionLearner.restore` rebuilds the learner from what was written
(both in :mod:`streams.saving`).
Because offsets and state move together, replaying events the worker had
already applied (after a crash, or a rebalance) is a no-op: records below the
stored offset are skipped.

Events are tallied per arm and window bucket before the window is updated
(one update per arm and bucket per batch).

Known limitations: impressions and clicks are separate topics, so the order
in which a worker sees them depends on fetch timing. The attribution rules
make the final counts independent of that order, except for clicks that sit
right at a window's edge, and for a batch spanning more than a whole window.
The FM, which learns by SGD, may see the same examples in another order.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from bandits.fm import fm_features
from bandits.window import SlidingWindow
from keyart.keys import arm_field
from keyart.settings import Settings
from schemas.codec import Codec, DecodeError
from streams.attribution import CLOCK_LEAD_MS, Attribution, Pending
from streams.dedupe import DedupeWindow
from streams.fm_shard import FMShard, in_fm_sample
from streams.saving import Arm, PartitionStore
from streams.shards import LinUCBShard, feature_rows
from streams.validate import check_event
from streams.vocabulary import ContextVocabulary

__all__ = ["DeadLetter", "PartitionLearner", "Record"]

logger = logging.getLogger("streams")

DeadLetter = tuple[str, int, int, bytes | None, bytes, str]
"""(topic, partition, offset, key, payload, reason)."""


class Record(Protocol):
    """What the learner needs of a consumed message."""

    offset: int
    key: bytes | None
    value: bytes | None


class PartitionLearner(PartitionStore):
    """Learner state of one partition.

    Parameters
    ----------
    partition
        Partition number (the same on the impression and click topics).
    settings
        Windows, splits, priors and model sizes.
    codec
        The schemas codec.
    dim
        Length of LinUCB's crossed feature vectors.
    """

    def __init__(
        self, partition: int, settings: Settings, codec: Codec, dim: int
    ) -> None:
        self.partition = partition
        self.settings = settings
        self.codec = codec
        self.dim = dim
        self.time_window = settings.window_kind == "time"
        length = settings.window_s if self.time_window else settings.window_impressions
        self.window = SlidingWindow(
            settings.window_kind, length, settings.window_buckets
        )
        self._width_ms = self.window.width * 1000.0
        self.alltime: dict[Arm, list[int]] = {}
        self.dirty: set[Arm] = set()
        dedupe_ms = round(settings.dedupe_window_s * 1000)
        self.dedupe = {
            "impression": DedupeWindow(dedupe_ms),
            "click": DedupeWindow(dedupe_ms),
        }
        self.attribution = Attribution(round(settings.attribution_window_s * 1000))
        self.linucb = LinUCBShard(dim)
        self.fm = FMShard(
            seed=settings.seed,
            vocabulary=ContextVocabulary.from_settings(settings, partition),
        )
        self.fm_rate = settings.fm_sample_rate
        self.fm_examples: list[tuple[int, bool, dict[str, float]]] = []
        """This batch's FM examples: (event time, clicked, features)."""
        self.offsets: dict[str, int] = {}
        self.dirty_offsets = False
        self.topic_ids: dict[str, str] = {}
        """Topic to the id of the topic its offset belongs to (None: unknown)."""
        self.fetched_before_reset: dict[str, int] = {}
        """Topic to its offset when it was reset to the start of a recreated
        log. The first batch after the reset that starts at or past it was
        fetched before the reset's seek (one can be on its way): it is dropped,
        and fetched again from the start."""
        self.counts: Counter[str] = Counter()
        self.max_skew_ms = round(settings.max_clock_skew_s * 1000)
        self._linucb_good = self._linucb_copy()

    # -- applying events -----------------------------------------------------------

    def _arm(self, record: Mapping[str, Any]) -> Arm:
        field = arm_field(
            record["poster_id"],
            record.get("placement", "") if self.settings.split_by_placement else "",
            record.get("segment", "") if self.settings.split_by_segment else "",
        )
        return record["video_id"], field

    def _decoded(
        self, topic: str, kind: str, records: Sequence[Record], dead: list[DeadLetter]
    ) -> list[tuple[dict[str, Any], bytes]]:
        """Decode and check records not yet applied; bad ones become dead letters."""
        start = self.offsets.get(topic, 0)
        out = []
        now_ms = int(time.time() * 1000)
        skew = self.max_skew_ms
        # The clock may lead the wall clock by a few seconds only, although
        # events may be dated up to max_clock_skew_s ahead: a clock that far
        # ahead gives up waiting clicks and expires windows minutes early.
        self.attribution.clock_limit = now_ms + CLOCK_LEAD_MS
        if records and topic in self.fetched_before_reset:
            if records[0].offset >= self.fetched_before_reset.pop(topic):
                self.counts["fetched_before_reset"] += len(records)
                return []
        for record in records:
            if record.offset < start:
                self.counts["skipped_replay"] += 1
                continue
            try:
                event = self.codec.decode(kind, record.value)  # type: ignore[arg-type]
                reason = check_event(kind, event, record.key, now_ms, skew)
            except DecodeError as error:
                reason = f"undecodable {kind}: {error}"
            if reason is not None:
                dead.append(
                    (
                        topic,
                        self.partition,
                        record.offset,
                        record.key,
                        record.value or b"",
                        reason,
                    )
                )
                continue
            out.append((event, record.value))  # type: ignore[arg-type]
        if records and records[-1].offset + 1 > start:
            self.offsets[topic] = records[-1].offset + 1
            self.dirty_offsets = True
        return out

    def _bucket(self, t_ms: int) -> int:
        """Group key of an event time: its window bucket (time kind) or 0."""
        return int(t_ms // self._width_ms) if self.time_window else 0

    def _count(self, counts: dict, arm: Arm, t_ms: int, clicks: int) -> None:
        """Add one impression (``clicks=0``) or click to the batch's tally."""
        key = (arm, self._bucket(t_ms))
        tally = counts.get(key)
        if tally is None:
            counts[key] = [t_ms, 1 - clicks, clicks]
        else:
            if t_ms > tally[0]:
                tally[0] = t_ms
            tally[1] += 1 - clicks
            tally[2] += clicks

    def _apply_counts(self, counts: dict) -> None:
        """Apply a batch's tally: one window update per arm and bucket.

        Equal to adding the events one by one unless a single batch spans more
        than a whole window.
        """
        window, alltime, dirty = self.window, self.alltime, self.dirty
        for (arm, _), (t_ms, impressions, clicks) in counts.items():
            window.add(arm, t_ms / 1000.0, impressions, clicks)
            totals = alltime.get(arm)
            if totals is None:
                totals = alltime[arm] = [0, 0]
            totals[0] += impressions
            totals[1] += clicks
            dirty.add(arm)

    def _credit(
        self, pending: Pending, counts: dict, click_pairs: list, click_ms: int
    ) -> None:
        self._count(counts, pending.arm, pending.time_ms, 1)
        impression = self.codec.decode("impression", pending.payload)
        click_pairs.append((impression["context"], impression["poster_features"]))
        if in_fm_sample(impression["event_id"], self.fm_rate):
            self._fm_example(impression, True, max(click_ms, pending.time_ms))

    def _fm_example(self, impression: Mapping[str, Any], y: bool, t_ms: int) -> None:
        self.fm_examples.append(
            (
                t_ms,
                y,
                fm_features(
                    impression["context"],
                    impression["poster_features"],
                    impression["poster_id"],
                ),
            )
        )

    def _learn_fm(self) -> None:
        """Learn the batch's FM examples in event-time order.

        SGD with a constant step weighs recent examples most, so the order
        matters: a learner catching up fetches a long run of impressions
        (negatives) and then of clicks (positives), where a live one saw them
        mixed. Sorting each batch by event time (a click's negative before its
        positive, as the sort is stable) keeps a replay close to the live
        order.
        """
        examples = self.fm_examples
        if examples:
            examples.sort(key=lambda e: e[0])
            xs, ys = [e[2] for e in examples], [e[1] for e in examples]
            self.fm.learn(xs, ys, [1.0] * len(examples))
            self.fm_examples = []

    def apply_impressions(
        self, topic: str, records: Sequence[Record], dead: list[DeadLetter]
    ) -> None:
        """Count new impressions; credit the clicks that waited for them."""
        dedupe = self.dedupe["impression"]
        attribution = self.attribution
        impression_pairs = []
        click_pairs: list = []
        impression_counts: dict = {}
        click_counts: dict = {}
        for event, payload in self._decoded(topic, "impression", records, dead):
            t_ms = event["event_time"]
            if dedupe.seen(event["event_id"], t_ms):
                self.counts["dedupe_impression"] += 1
                continue
            arm = self._arm(event)
            self._count(impression_counts, arm, t_ms, 0)
            if in_fm_sample(event["event_id"], self.fm_rate):
                self._fm_example(event, False, t_ms)  # a negative at once
            impression_pairs.append((event["context"], event["poster_features"]))
            judged = attribution.add_impression(
                event["event_id"], t_ms, arm, event["poster_id"], payload
            )
            for outcome, pending, click in judged:
                self.counts[outcome] += 1
                if outcome == "credited_after_wait":
                    self._credit(pending, click_counts, click_pairs, click.time_ms)
            self.counts["impressions"] += 1
        # Impressions before clicks, so a click lands in its impression's bucket.
        self._apply_counts(impression_counts)
        self._apply_counts(click_counts)
        if impression_pairs:
            self.linucb.add_impressions(feature_rows(impression_pairs, self.dim))
        if click_pairs:
            self.linucb.add_clicks(feature_rows(click_pairs, self.dim))

    def apply_clicks(
        self, topic: str, records: Sequence[Record], dead: list[DeadLetter]
    ) -> None:
        """Judge and credit new clicks by the attribution rules."""
        dedupe = self.dedupe["click"]
        seen_impressions = self.dedupe["impression"]
        attribution = self.attribution
        click_pairs: list = []
        click_counts: dict = {}
        for event, payload in self._decoded(topic, "click", records, dead):
            if dedupe.seen(event["event_id"], event["event_time"]):
                self.counts["dedupe_click"] += 1
                continue
            impression_id = event["impression_id"]
            if (
                impression_id not in attribution.pending
                and impression_id in seen_impressions
            ):
                self.counts["after_window"] += 1  # its impression has expired
                continue
            outcome, pending = attribution.add_click(
                event["event_id"],
                impression_id,
                event["event_time"],
                event["poster_id"],
                payload,
            )
            self.counts[outcome] += 1
            if outcome == "credited" and pending is not None:
                self._credit(pending, click_counts, click_pairs, event["event_time"])
            self.counts["clicks"] += 1
        self._apply_counts(click_counts)
        if click_pairs:
            self.linucb.add_clicks(feature_rows(click_pairs, self.dim))

    def advance(self) -> None:
        """Slide windows and forget what the partition clock has passed."""
        clock = self.attribution.clock
        if self.time_window:
            self.dirty.update(self.window.expire(clock / 1000.0))
        _unclicked, given_up = self.attribution.expire()
        self._learn_fm()
        if given_up:
            self.counts["no_impression"] += given_up
        for dedupe in self.dedupe.values():
            dedupe.expire(clock)
