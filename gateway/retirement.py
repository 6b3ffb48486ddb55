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
milliseconds, and in a thread the requests in flight wait for it (in a loop
of 4,000 rows, the longest row took 49-55 ms in one run of two with a thread,
6.1-6.7 ms with the child). The child starts on the first evaluation (by
``spawn``: forking a process that runs librdkafka's threads is unsafe), is
shared by every gateway of the process, and is replaced when it dies (a
second later, the wait doubling while children die in a row, up to
:data:`RESPAWN_MAX_S`) or leaves an evaluation unanswered for
:data:`EVALUATION_TIMEOUT_S` (stopped, hung). Where no child can be started,
or :data:`MAX_FAILED_STARTS` children in a row die before they answer,
evaluations fall back to a thread for the rest of the process. The gateway
kills its child when it stops, and a child whose gateway died without
stopping (SIGKILL, or SIGTERM's default action, which uvicorn re-raises after
its shutdown and which skips the interpreter's exit handlers) exits by itself
within :data:`gateway._orphan.PARENT_CHECK_S`. The rule's draws are seeded,
so the same counts give the same statuses wherever they are evaluated.

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
from gateway._orphan import follow_parent, step_aside
from gateway.config import RuleConfig

__all__ = ["Retirement"]


logger = logging.getLogger("gateway")

_RuleKey = tuple[int, float, float, float, int, float, float]
"""What makes a :class:`RetirementRule`: the rule's settings, seed and prior."""

EVALUATION_TIMEOUT_S = 30.0
"""Longest one evaluation may take in the child (about 2 ms, plus the child's
start for the first) before the child is taken for hung, killed and replaced."""

RESPAWN_MAX_S = 60.0
"""Longest wait before another child, after children died in a row (the
wait doubles from 1 s)."""

MAX_FAILED_STARTS = 3
"""Children in a row that may die before answering anything; after them the
process evaluates in a thread (an interpreter or a main module that cannot be
started again will not start on the next try either)."""

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


def _start_child(parent: int) -> None:
    """Leave Ctrl-C to the gateway, and exit once the gateway is gone.

    The child waits on its task queue, whose pipe it holds both ends of, so
    it would never see the gateway die: it would be left running for good.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    step_aside()
    follow_parent(parent, lambda: os._exit(0), "retirement-parent")


def _thread_pool(error: BaseException) -> Executor:
    logger.warning(
        "cannot start the retirement process (%r): evaluating in a thread, "
        "which delays requests while it runs",
        error,
    )
    return ThreadPoolExecutor(1, thread_name_prefix="retirement")


class _Evaluator:
    """The process's one retirement child, started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: Executor | None = None

    def pool(self) -> Executor:
        with self._lock:
            if self._pool is None:
                try:
                    self._pool = ProcessPoolExecutor(
                        1,
                        mp_context=multiprocessing.get_context("spawn"),
                        initializer=_start_child,
                        initargs=(os.getpid(),),
                    )
                except (OSError, ValueError) as error:
                    self._pool = _thread_pool(error)
            return self._pool

    def fall_back(self, broken: Executor, error: BaseException) -> None:
        """Evaluate in a thread from now on: children do not start."""
        self.replace(broken, kill=True)
        with self._lock:
            if self._pool is None:
                self._pool = _thread_pool(error)

    def replace(self, broken: Executor, kill: bool = False) -> None:
        """Forget a pool whose child died (or, with ``kill``, kill its child
        first); the next use starts another."""
        with self._lock:
            if self._pool is broken:
                self._pool = None
        if kill:
            # SIGKILL, which also ends a stopped child; it holds no state.
            for process in list((getattr(broken, "_processes", None) or {}).values()):
                if process.is_alive():
                    process.kill()
        broken.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Kill the child, if any: the gateway is stopping. A later use starts
        another one."""
        pool = self._pool
        if pool is not None:
            self.replace(pool, kill=True)

    def child_pids(self) -> list[int]:
        """Process ids of the running child (empty before the first use)."""
        pool = self._pool
        processes = getattr(pool, "_processes", None) or {}
        return [p for p, process in processes.items() if process.is_alive()]


EVALUATOR = _Evaluator()


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
        deaths = 0  # of the child in a row, without an evaluation between
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                video_id = next(iter(self._queue))
                rules, identity, n, c = self._queue.pop(video_id)
                pool = EVALUATOR.pool()
                try:
                    statuses = await asyncio.wait_for(
                        loop.run_in_executor(
                            pool, _statuses, self._key(rules), identity[0], n, c
                        ),
                        EVALUATION_TIMEOUT_S,
                    )
                except TimeoutError:
                    logger.warning(
                        "the retirement process left an evaluation unanswered "
                        "for %.0f s; killing it and starting another one",
                        EVALUATION_TIMEOUT_S,
                    )
                    EVALUATOR.replace(pool, kill=True)
                    self._queue.setdefault(video_id, (rules, identity, n, c))
                    continue
                except (BrokenProcessPool, OSError) as error:
                    if not isinstance(error, BrokenProcessPool) and not isinstance(
                        pool, ProcessPoolExecutor
                    ):
                        logger.exception("retirement rule failed on %s", video_id)
                        continue
                    # An OSError here is the child failing to start.
                    self._queue.setdefault(video_id, (rules, identity, n, c))
                    deaths += 1
                    if deaths >= MAX_FAILED_STARTS:
                        EVALUATOR.fall_back(pool, error)
                        deaths = 0
                        continue
                    # Doubling: a child that dies as it starts (the code on
                    # disk changed under a running gateway) was spawned again
                    # every second for good, with a warning each time.
                    wait_s = min(RESPAWN_MAX_S, 2.0 ** (deaths - 1))
                    logger.warning(
                        "the retirement process died (%d in a row); starting "
                        "another one in %.0f s",
                        deaths,
                        wait_s,
                    )
                    EVALUATOR.replace(pool)
                    await asyncio.sleep(wait_s)
                    continue
                except Exception:  # a bad video must not stop the rule for all
                    logger.exception("retirement rule failed on %s", video_id)
                    continue
                deaths = 0
                if len(self._cache) >= self.max_videos:
                    self._cache.clear()
                self._cache[video_id] = (
                    time.monotonic() + self.recheck_s,
                    identity,
                    statuses,
                )
                await asyncio.sleep(1.0 / self.max_per_s)
