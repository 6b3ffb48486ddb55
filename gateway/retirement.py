"""The sequential retirement rule as the gateway applies it: demote, retire.

The rule itself is :class:`bandits.retirement.RetirementRule` (posterior
probability of being worse than the video's best, plus anytime-valid bounds
for the irreversible step). Evaluating it costs milliseconds, far more than a
whole row may take, so requests never run it: they read the statuses cached
for the video and queue the video when those are older than ``recheck_s``
(or its posters or rules changed). The gateway evaluates the queue in one
child process, each video with the counts of the row that queued it (newer
rows replace them only when the video's posters or rules changed), one video
at a time and at most ``max_per_s`` videos a second (about 2 ms of CPU each).

A child process, not a thread: an evaluation holds the interpreter lock for
milliseconds, and in a thread each one stalled every request in flight. At
500 rows a second that turned a p99 of 8-9 ms into 30-150 ms (``bench/
bench_gateway.py``). The child starts on the first evaluation (by ``spawn``:
forking a process that runs librdkafka's threads is unsafe), is shared by
every gateway of the process, and is replaced when it dies. It ends when the
gateway's process does, also when that one is killed outright (SIGKILL, the
OOM killer), which runs none of its exit handlers. Where no child can be
started, or :data:`MAX_FAILED_STARTS` children in a row die before they
evaluate anything (an interpreter or a main module that cannot start),
evaluations fall back to a thread for the rest of the process. The rule's
draws are seeded, so the same counts give the same statuses wherever they are
evaluated.

A poster is therefore demoted or retired up to ``recheck_s`` seconds plus the
queue's delay after the evidence is in, which matters little for a rule that
needs thousands of impressions anyway; a video never evaluated yet is served
as all active, and a catalog of many thousands of busy videos is re-judged
less often than ``recheck_s``.

A demoted poster keeps being served at ``demote_factor`` times its score; a
retired one is masked at once and reported, so the service records it in the
video's retired hash and logs a ``poster_published`` event with
``retired=true``.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from bandits.retirement import RetirementRule
from bandits.state import ArmStats
from gateway.config import RuleConfig

__all__ = ["Retirement"]


logger = logging.getLogger("gateway")

_RuleKey = tuple[int, float, float, float, int, float, float]
"""What makes a :class:`RetirementRule`: the rule's settings, seed and prior."""

_worker_rules: dict[_RuleKey, RetirementRule] = {}
"""Rules made so far in this process (the child's, or the fallback thread's)."""


def _statuses(
    key: _RuleKey,
    poster_ids: Sequence[str],
    impressions: Sequence[float],
    clicks: Sequence[float],
) -> list[str]:
    """Every poster's status under the rule ``key`` (runs in the child)."""
    rule = _worker_rules.get(key)
    if rule is None:
        minimum, demote_at, retire_at, margin, seed, alpha, beta = key
        rule = _worker_rules[key] = RetirementRule(
            min_impressions=minimum,
            demote_at=demote_at,
            retire_at=retire_at,
            margin=margin,
            seed=seed,
            prior_alpha=alpha,
            prior_beta=beta,
        )
    decided = rule.decide(
        {
            poster: ArmStats(int(n), int(c))
            for poster, n, c in zip(poster_ids, impressions, clicks, strict=True)
        }
    )
    return [decided[p] for p in poster_ids]


MAX_FAILED_STARTS = 3
"""Children in a row that may die before their first evaluation; after them
the process evaluates in a thread."""


def _start_child() -> None:
    """Leave Ctrl-C to the gateway, and end with the gateway's process.

    A pool's child waits for work on a queue whose writing end it holds as
    well, so a gateway killed outright would leave it waiting forever; it
    watches its parent instead and exits once the parent is gone.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(
            target=_exit_with, args=(parent.sentinel,), daemon=True
        ).start()


def _exit_with(parent_sentinel: int) -> None:
    multiprocessing.connection.wait([parent_sentinel])
    os._exit(0)


class _Evaluator:
    """The process's one retirement child, started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: Executor | None = None
        self._evaluated = False  # the current child has answered once
        self._failed_starts = 0

    def pool(self) -> Executor:
        with self._lock:
            if self._pool is None:
                try:
                    self._pool = ProcessPoolExecutor(
                        1,
                        mp_context=multiprocessing.get_context("spawn"),
                        initializer=_start_child,
                    )
                except (OSError, ValueError) as error:
                    self._pool = self._thread(error)
                self._evaluated = False
            return self._pool

    def _thread(self, error: BaseException) -> Executor:
        logger.warning(
            "cannot start the retirement process (%r): evaluating in a thread, "
            "which delays requests while it runs",
            error,
        )
        return ThreadPoolExecutor(1, thread_name_prefix="retirement")

    def evaluated(self, pool: Executor) -> None:
        """Note that ``pool`` answered an evaluation: its child did start."""
        with self._lock:
            if self._pool is pool:
                self._evaluated = True
                self._failed_starts = 0

    def replace(self, broken: Executor, error: BaseException) -> None:
        """Forget a pool whose child died or could not be started; the next use
        starts another, or a thread after :data:`MAX_FAILED_STARTS` children
        that never evaluated anything."""
        with self._lock:
            if self._pool is broken:
                self._pool = None
                if not self._evaluated:
                    self._failed_starts += 1
                if self._failed_starts >= MAX_FAILED_STARTS:
                    self._pool = self._thread(error)
        broken.shutdown(wait=False, cancel_futures=True)

    def child_pids(self) -> list[int]:
        """Process ids of the running child (empty before the first use)."""
        pool = self._pool
        processes = getattr(pool, "_processes", None) or {}
        return [p for p, process in processes.items() if process.is_alive()]


EVALUATOR = _Evaluator()


def _child_failed(pool: Executor, error: BaseException) -> bool:
    """Whether ``error`` means that the child of ``pool`` died or could not be
    started (an OSError from the submit that starts it), not that the rule
    failed on a video."""
    if isinstance(error, BrokenProcessPool):
        return True
    return isinstance(error, OSError) and isinstance(pool, ProcessPoolExecutor)


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
        self._cache: dict[str, tuple[float, tuple[Any, ...], list[str]]] = {}
        self._queue: dict[
            str,
            tuple[RuleConfig, tuple[Any, ...], Sequence[float], Sequence[float], float],
        ] = {}
        self._wake = asyncio.Event()

    def _key(self, rules: RuleConfig) -> _RuleKey:
        return (
            rules.retire_min_impressions,
            rules.demote_at,
            rules.retire_at,
            rules.retire_margin,
            self.seed,
            self.prior_alpha,
            self.prior_beta,
        )

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
        """Run the rule now, in this thread (milliseconds)."""
        return _statuses(self._key(rules), poster_ids, impressions, clicks)

    async def run(self) -> None:
        """Evaluate queued videos forever, one at a time, in the child."""
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                video_id = next(iter(self._queue))
                rules, identity, n, c = self._queue.pop(video_id)
                pool = EVALUATOR.pool()
                try:
                    statuses = await loop.run_in_executor(
                        pool, _statuses, self._key(rules), identity[0], n, c
                    )
                except Exception as error:
                    if not _child_failed(pool, error):
                        # A bad video must not stop the rule for all.
                        logger.exception("retirement rule failed on %s", video_id)
                        continue
                    logger.warning(
                        "the retirement process died or did not start (%r); "
                        "starting another one",
                        error,
                    )
                    EVALUATOR.replace(pool, error)
                    self._queue.setdefault(video_id, (rules, identity, n, c))
                    await asyncio.sleep(1.0)
                    continue
                EVALUATOR.evaluated(pool)
                if len(self._cache) >= self.max_videos:
                    self._cache.clear()
                self._cache[video_id] = (
                    time.monotonic() + self.recheck_s,
                    identity,
                    statuses,
                )
                await asyncio.sleep(1.0 / self.max_per_s)
