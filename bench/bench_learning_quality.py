"""Learning quality: keyart's Thompson sampling through Kafka against river's.

Run by hand: ``python -m bench.bench_learning_quality``.

Part 1, stationary (window longer than the run). ``--videos`` videos, each a
k-armed Bernoulli problem (click rates 4-9 %, shuffled per video), get
``--rounds`` decisions each. keyart decides with
:class:`bandits.policies.thompson.ThompsonSampling` over the arm statistics a
real ``keyart streams`` worker publishes in Redis; every decision's impression
and click go through the broker, so the policy sees them only after the
learner's batch and flush (about ``flush_interval_ms`` later). river's
``bandit.ThompsonSampling`` plays the same problems learning from each event
at once. Target: keyart's cumulative regret within 10 % of river's.

Part 2, an abrupt change. With a 20-second time window, the best poster of
every video becomes the worst after ``--change-at`` seconds (60). Target:
from one window after the change on, the windowed policy picks the new best
poster at least 80 % of the time; the all-time policy (same learner,
all-time counts) does not. A window must hold enough impressions to tell
9 % from 7 %, so this part uses a few busy videos (``--change-videos``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import redis

from bandits.policies.thompson import ThompsonSampling
from bandits.state import ArmStats
from bench._common import private_stack, wait_assigned, worker
from keyart.keys import Keys
from producers.events import EventProducer

RATES = np.array([0.04, 0.05, 0.06, 0.07, 0.09])


def river_regret(problems: list[np.ndarray], rounds: int, seed: int) -> float:
    from river import bandit, proba

    regret = 0.0
    for v, rates in enumerate(problems):
        policy = bandit.ThompsonSampling(reward_obj=proba.Beta(), seed=seed + v)
        rng = np.random.default_rng(seed + 1000 + v)
        for _ in range(rounds):
            arm = policy.pull(list(range(len(rates))))
            policy.update(arm, bool(rng.random() < rates[arm]))
            regret += rates.max() - rates[arm]
    return regret


class Player:
    """Decides from the learner's Redis state and sends what happened."""

    def __init__(self, settings, seed: int) -> None:
        self.settings = settings
        self.keys = Keys(settings.redis_prefix)
        self.client = redis.Redis.from_url(settings.redis_url)
        self.producer = EventProducer(settings, config={"linger.ms": 5})
        self.rng = np.random.default_rng(seed)
        self.stats: dict[str, list[ArmStats]] = {}
        self.read_at = 0.0
        self.n = 0

    def refresh(self, videos: list[str], k: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        for video in videos:
            pipe.hgetall(self.keys.arms(video))
        for video, fields in zip(videos, pipe.execute(), strict=True):
            self.stats[video] = [
                ArmStats.unpack(fields.get(f"p{a}".encode())) for a in range(k)
            ]
        self.read_at = time.monotonic()

    def play(self, video: str, policy: ThompsonSampling, rates: np.ndarray) -> int:
        scores = policy.sample_scores(self.stats[video], self.rng, 1)[0]
        arm = int(scores.argmax())
        now = int(time.time() * 1000)
        self.n += 1
        impression = {
            "event_id": f"i{self.n}",
            "event_time": now,
            "user_id": f"u{self.n % 1000}",
            "video_id": video,
            "poster_id": f"p{arm}",
            "placement": "row",
        }
        self.producer.send("impression", impression)
        if self.rng.random() < rates[arm]:
            click = {
                **impression,
                "event_id": f"c{self.n}",
                "impression_id": f"i{self.n}",
            }
            click["event_time"] = now + 1
            del click["placement"]
            self.producer.send("click", click)
        return arm


def run_games(player, videos, problems, policies, rounds, rate, until=None):
    """Round-robin decisions at ``rate`` per second.

    ``problems[v]`` is a video's click rates, or a function of the seconds
    since the start returning them. Stops after ``rounds`` or at ``until``
    seconds. Returns the chosen arms and the time of each round.
    """
    chosen = np.zeros((len(videos), rounds), dtype=int)
    round_times = np.zeros(rounds)
    started = time.monotonic()
    step = 0
    for r in range(rounds):
        round_times[r] = time.monotonic() - started
        if until is not None and round_times[r] >= until:
            chosen, round_times = chosen[:, :r], round_times[:r]
            break
        for v, video in enumerate(videos):
            target = started + step / rate
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if time.monotonic() - player.read_at > 0.02:  # a gateway-like cache
                player.refresh(videos, len(RATES))
            rates = problems[v]
            if callable(rates):
                rates = rates(time.monotonic() - started)
            chosen[v, r] = player.play(video, policies[v], rates)
            step += 1
    player.producer.flush()
    return chosen, round_times


def stationary(args) -> None:
    rng = np.random.default_rng(args.seed)
    problems = [rng.permutation(RATES) for _ in range(args.videos)]
    with private_stack(window_s=86_400.0) as settings:
        log = Path(tempfile.mkdtemp(prefix="keyart-bench-")) / "worker.log"
        with worker(settings, log):
            wait_assigned(log)
            player = Player(settings, args.seed)
            videos = [f"s{v}" for v in range(args.videos)]
            policy = ThompsonSampling(use_window=True)
            chosen, _ = run_games(
                player, videos, problems, [policy] * len(videos), args.rounds, args.rate
            )
    ours = sum(float((p.max() - p[chosen[v]]).sum()) for v, p in enumerate(problems))
    theirs = river_regret(problems, args.rounds, args.seed)
    print(
        f"stationary: {args.videos} videos x {args.rounds} rounds, "
        f"{args.rate:,}/s through Kafka, flush {settings.flush_interval_ms} ms"
    )
    print(f"  river ThompsonSampling, instant updates: regret {theirs:8.1f}")
    print(
        f"  keyart sliding-window TS via Kafka:      regret {ours:8.1f} "
        f"({ours / theirs - 1:+.1%}; target within +10%)"
    )


def abrupt_change(args) -> None:
    window_s, change_s, after_s = 20.0, args.change_at, 10.0
    videos_n = args.change_videos
    rate = args.rate
    # Enough rounds to outlast the clock even at a third of the asked rate.
    rounds = int((change_s + window_s + after_s) * rate / (2 * videos_n)) * 3
    rng = np.random.default_rng(args.seed + 1)
    before = [rng.permutation(RATES) for _ in range(videos_n)]
    after = []
    for rates in before:
        swapped = rates.copy()
        best, worst = int(rates.argmax()), int(rates.argmin())
        swapped[best], swapped[worst] = rates[worst], rates[best]
        after.append(swapped)

    def problem(v):
        return lambda elapsed: before[v] if elapsed < change_s else after[v]

    with private_stack(window_s=window_s, window_buckets=10) as settings:
        log = Path(tempfile.mkdtemp(prefix="keyart-bench-")) / "worker.log"
        with worker(settings, log):
            wait_assigned(log)
            player = Player(settings, args.seed + 1)
            videos = [f"w{v}" for v in range(videos_n)]
            videos += [f"a{v}" for v in range(videos_n)]
            problems = [problem(v) for v in range(videos_n)] * 2
            policies = [ThompsonSampling(use_window=True)] * videos_n
            policies += [ThompsonSampling(use_window=False)] * videos_n
            chosen, times = run_games(
                player,
                videos,
                problems,
                policies,
                rounds,
                rate,
                until=change_s + window_s + after_s,
            )
    late = (times >= change_s + window_s) & (times < change_s + window_s + after_s)
    new_best = np.array([int(a.argmax()) for a in after] * 2)
    hits = chosen[:, late] == new_best[:, None]
    windowed = hits[:videos_n].mean()
    alltime = hits[videos_n:].mean()
    per_video = rate / (2 * videos_n)
    print(
        f"abrupt change: {videos_n} videos per policy, {per_video:.0f} decisions/s "
        f"each; the best poster becomes the worst at {change_s:.0f} s; "
        f"window {window_s:.0f} s in 10 buckets"
    )
    print(
        f"  picks of the new best from one window after the change "
        f"({late.sum()} rounds): windowed TS {windowed:.1%} (target >= 80%), "
        f"all-time TS {alltime:.1%}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=1500)
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument(
        "--change-videos",
        type=int,
        default=2,
        help="videos per policy in the abrupt-change part (fewer: more data each)",
    )
    parser.add_argument(
        "--change-at", type=float, default=60.0, help="seconds before the change"
    )
    parser.add_argument(
        "--part", choices=["both", "stationary", "change"], default="both"
    )
    args = parser.parse_args()
    if args.part in ("both", "stationary"):
        stationary(args)
    if args.part in ("both", "change"):
        abrupt_change(args)


if __name__ == "__main__":
    main()
