"""The sequential retirement rule as the gateway applies it: demote, retire.

The rule itself is :class:`bandits.retirement.RetirementRule` (posterior
probability of being worse than the video's best, plus anytime-valid bounds
for the irreversible step). Evaluating it costs milliseconds, far more than a
whole row may take, so requests never run it: they read the statuses cached
for the video and queue the video when those are older than ``recheck_s``
(or its posters or rules changed). One background thread evaluates the queue,
each video with the counts of the row that queued it (newer rows replace them
only when the video's posters or rules changed), one video at a time and at most
``max_per_s`` videos a second (a few milliseconds of CPU each), so the rule
never takes more than a small share of the process. A poster is therefore
demoted or retired up to ``recheck_s`` seconds plus the queue's delay after
the evidence is in, which matters little for a rule that needs thousands of
impressions anyway; a video never evaluated yet is served as all active, and
a catalog of many thousands of busy videos is re-judged less often than
``recheck_s``.

A demoted poster keeps being served at ``demote_factor`` times its score; a
retired one is masked at once and reported, so the service records it in the
video's retired hash and logs a ``poster_published`` event with
``retired=true``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bandits.retirement import RetirementRule
from bandits.state import ArmStats
from gateway.config import RuleConfig

__all__ = ["Retirement"]


logger = logging.getLogger("gateway")


class Retirement:
    """Cached statuses (``active``, ``demoted``, ``retired``) per video.

    Parameters
    ----------
    seed
        Seed of the rule's Monte Carlo draws (the same counts give the same
        statuses in every process).
    prior_alpha, prior_beta
        Beta prior of the posteriors.
    recheck_s
        Time a video's statuses are served before it is queued again.
    max_per_s
        Most evaluations per second.
    """

    def __init__(
        self,
        seed: int,
        prior_alpha: float = 1.0,
        prior_beta: float = 1.0,
        recheck_s: float = 300.0,
        max_per_s: float = 20.0,
        max_videos: int = 100_000,
    ) -> None:
        self.seed = seed
        self.prior_alpha = prior_alpha
        self.prior_beta = prior_beta
        self.recheck_s = recheck_s
        self.max_per_s = max_per_s
        self.max_videos = max_videos
        self._rules: dict[tuple[float, ...], RetirementRule] = {}
        self._cache: dict[str, tuple[float, tuple[Any, ...], list[str]]] = {}
        self._queue: dict[
            str,
            tuple[RuleConfig, tuple[Any, ...], Sequence[float], Sequence[float], float],
        ] = {}
        self._wake = asyncio.Event()

    def _rule(self, rules: RuleConfig) -> RetirementRule:
        key = (
            rules.retire_min_impressions,
            rules.demote_at,
            rules.retire_at,
            rules.retire_margin,
        )
        rule = self._rules.get(key)
        if rule is None:
            rule = self._rules[key] = RetirementRule(
                min_impressions=rules.retire_min_impressions,
                demote_at=rules.demote_at,
                retire_at=rules.retire_at,
                margin=rules.retire_margin,
                seed=self.seed,
                prior_alpha=self.prior_alpha,
                prior_beta=self.prior_beta,
            )
        return rule

    def row_statuses(
        self,
        rules: RuleConfig,
        video_ids: Sequence[str],
        poster_ids: Sequence[str],
        impressions: Sequence[float],
        clicks: Sequence[float],
        bounds: Sequence[tuple[int, int]],
    ) -> list[list[str] | None]:
        """Cached statuses of a row's videos; stale or missing ones queue the
        video for the background evaluation.

        Video ``j``'s posters are ``poster_ids[s:e]`` for ``(s, e) =
        bounds[j]``, with their counts at the same positions. Its entry is the
        status of each of them, or None when all are active: none has
        ``retire_min_impressions`` yet, or the video was never evaluated. One
        call serves the whole row, so the rule's identity and the clock are
        taken once.

        The slices of ``impressions`` and ``clicks`` are kept for that
        evaluation as given, not copied.
        """
        minimum = rules.retire_min_impressions
        tail = (minimum, rules.demote_at, rules.retire_at, rules.retire_margin)
        now = time.monotonic()
        cache, queue = self._cache, self._queue
        out: list[list[str] | None] = []
        for video_id, (start, end) in zip(video_ids, bounds, strict=True):
            counts = impressions[start:end]
            if max(counts, default=0) < minimum:
                out.append(None)
                continue
            identity = (tuple(poster_ids[start:end]), *tail)
            cached = cache.get(video_id)
            fresh = cached is not None and cached[1] == identity
            if not fresh or cached[0] < now:  # type: ignore[index]
                # A queued video keeps the counts of the row that queued it,
                # unless its posters or rules changed: replacing them on every
                # row kept a new tuple and two lists per video and row alive
                # until the evaluation, and those survivors lengthened the
                # garbage collector's pauses.
                queued = queue.get(video_id)
                if queued is None or queued[1] != identity:
                    queue[video_id] = (rules, identity, counts, clicks[start:end])
                self._wake.set()
            out.append(cached[2] if fresh else None)  # type: ignore[index]
        return out

    def evaluate(
        self,
        rules: RuleConfig,
        poster_ids: Sequence[str],
        impressions: Sequence[float],
        clicks: Sequence[float],
    ) -> list[str]:
        """Run the rule now (milliseconds; call it off the event loop)."""
        decided = self._rule(rules).decide(
            {
                poster: ArmStats(int(n), int(c))
                for poster, n, c in zip(poster_ids, impressions, clicks, strict=True)
            }
        )
        return [decided[p] for p in poster_ids]

    async def run(self) -> None:
        """Evaluate queued videos forever, one at a time, in a worker thread."""
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(1, thread_name_prefix="retirement") as pool:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._queue:
                    video_id = next(iter(self._queue))
                    rules, identity, n, c = self._queue.pop(video_id)
                    try:
                        statuses = await loop.run_in_executor(
                            pool, self.evaluate, rules, identity[0], n, c
                        )
                    except ValueError:
                        logger.exception("retirement rule failed on %s", video_id)
                        continue
                    if len(self._cache) >= self.max_videos:
                        self._cache.clear()
                    self._cache[video_id] = (
                        time.monotonic() + self.recheck_s,
                        identity,
                        statuses,
                    )
                    await asyncio.sleep(1.0 / self.max_per_s)
