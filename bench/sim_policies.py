"""The demo's comparison in seconds: keyart's policies against the click model.

Run by hand: ``python -m bench.sim_policies --catalog catalog.json``.

``keyart demo`` answers whether the policies beat random through the whole
stack, in four minutes per run, and one run's intervals do not cover the
learning's own luck. This script plays the same game in memory, many times:
the demo's MovieLens users and synthetic click model
(:mod:`producers.simulator`) over a catalog the workers made, rows of the
demo's videos in a random order, and each policy of :mod:`bandits.policies`
fed the way the gateway feeds it, from models the learner's own classes
build (:class:`streams.shards.LinUCBShard`, :class:`streams.fm_shard.FMShard`,
count tallies for Thompson sampling). All variants' impressions teach every
model, as in the learner. What it leaves out: business rules (the demo sets
them neutral), propensity logging, the broker and Redis. Learner state moves
on every ``--flush-s`` of simulated time and the FM is republished every
:data:`streams.fm_shard.FM_PUBLISH_S`; clicks arrive after the simulator's
delays and those later than the demo's attribution window (60 s) are never
credited.

``--catalog`` is a JSON file ``{"video_to_posters": {...},
"poster_to_features": {...}}``; ``keyart demo`` writes one as
``catalog.json`` in its report folder. It prints, per policy, the expected
click-through rate of the posters shown (the oracle's, free of click noise)
over the runs, its mean lift over random and over Thompson sampling, and how
many runs each lift was positive in, over the whole run and over its last
third (where the models have learnt most).
"""

from __future__ import annotations

import argparse
import heapq
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from pydantic import ValidationError

from bandits.features import FEATURE_DIM, cross_features_many
from bandits.fm import FMScorer, ShardedFMScorer, fm_features, scorer_from_export
from bandits.policies import POLICIES as POLICY_CLASSES
from bandits.policies import Policy, make_policy
from bandits.state import ArmStats
from keyart.settings import Settings
from producers.demo import DemoOptions
from producers.simulator import ClickModel, ClickParams, Oracle, TrafficSimulator
from producers.users import SimUser, load_users
from streams.fm_shard import FM_PUBLISH_S, FMShard, merge_fm
from streams.shards import LinUCBShard, feature_rows, merge_linucb

POLICIES = ("random", "thompson", "linucb", "fm")


class Learner:
    """What the streaming learner would hold, fed in event-time order."""

    def __init__(self, settings: Mapping[str, Any], seed: int) -> None:
        self.settings = settings
        self.counts: dict[str, list[int]] = {}
        self.linucb_shard = LinUCBShard(FEATURE_DIM)
        # Events are keyed by video, so each video's FM examples land in one
        # partition's shard, as in the learner.
        self.fm_shards: dict[str, FMShard] = {}
        self.seed = seed
        self.linucb: Any = None
        self.fm: FMScorer | ShardedFMScorer | None = None
        self.fm_published_s = -math.inf
        self._pending: list[tuple[float, int, Any]] = []
        self._n = 0

    def impression(
        self, t_s: float, video: str, poster: str, context: dict, features: dict
    ) -> None:
        self._push(t_s, ("impression", video, poster, context, features))

    def click(
        self, t_s: float, video: str, poster: str, context: dict, features: dict
    ) -> None:
        self._push(t_s, ("click", video, poster, context, features))

    def _push(self, t_s: float, event: Any) -> None:
        self._n += 1
        heapq.heappush(self._pending, (t_s, self._n, event))

    def flush(self, now_s: float) -> None:
        """Learn every event that reached the learner by ``now_s``."""
        imp_pairs, click_pairs = [], []
        examples: dict[str, tuple[list, list]] = {}
        while self._pending and self._pending[0][0] <= now_s:
            _, _, event = heapq.heappop(self._pending)
            kind, video, poster, context, features = event
            xs, ys = examples.setdefault(video, ([], []))
            clicked = kind == "click"
            self.counts.setdefault(poster, [0, 0])[clicked] += 1
            (click_pairs if clicked else imp_pairs).append((context, features))
            xs.append(fm_features(context, features, poster_id=poster))
            ys.append(clicked)
        if imp_pairs:
            self.linucb_shard.add_impressions(feature_rows(imp_pairs, FEATURE_DIM))
        if click_pairs:
            self.linucb_shard.add_clicks(feature_rows(click_pairs, FEATURE_DIM))
        for video, (xs, ys) in examples.items():
            shard = self.fm_shards.get(video)
            if shard is None:
                shard = self.fm_shards[video] = FMShard(self.seed)
            shard.learn(xs, ys, [1.0] * len(xs))
        if imp_pairs or click_pairs:
            self.linucb = merge_linucb(
                [self.linucb_shard], alpha=self.settings["linucb_alpha"], ridge=1.0
            )
        if now_s - self.fm_published_s >= FM_PUBLISH_S and self.fm_shards:
            merged = merge_fm([shard.export() for shard in self.fm_shards.values()])
            self.fm = scorer_from_export(merged) if merged else None
            self.fm_published_s = now_s

    def stats(self, posters: Sequence[str]) -> list[ArmStats]:
        out = []
        for p in posters:
            n, c = self.counts.get(p, (0, 0))
            out.append(ArmStats(n, min(c, n), n, min(c, n)))
        return out


Chooser = Callable[[Learner, SimUser, Sequence[str], np.random.Generator], int]


def chooser(
    name: str, settings: Mapping[str, Any], features: Mapping[str, dict]
) -> Chooser:
    """How the gateway would pick among ``posters`` for ``user`` with policy
    ``name``, from the learner's current state."""
    built: dict[Any, Policy] = {}

    def policy_for(model: Any) -> Policy:
        key = id(model)
        if key not in built:
            built.clear()
            if name == "linucb" and model is not None:
                built[key] = make_policy(name, settings, model=model)
            elif name == "fm" and model is not None:
                built[key] = make_policy(name, settings, scorer=model)
            else:
                built[key] = make_policy(
                    "thompson" if name in ("linucb", "fm") else name, settings
                )
        return built[key]

    def choose(learner, user, posters, rng) -> int:
        model = {"linucb": learner.linucb, "fm": learner.fm}.get(name)
        policy = policy_for(model)
        stats = learner.stats(posters)
        context = user.context()
        X = None
        if name == "linucb" and model is not None:
            X = cross_features_many(context, [features[p] for p in posters], model.dim)
        elif name == "fm" and model is not None:
            X = [fm_features(context, features[p], poster_id=p) for p in posters]
        return policy.choose(stats, rng, X=X).index

    return choose


def play(
    catalog: Mapping[str, Any],
    users: Sequence[SimUser],
    settings: Mapping[str, Any],
    params: ClickParams,
    seconds: float,
    rate: float,
    flush_s: float,
    seed: int,
    policies: Sequence[str] = POLICIES,
) -> dict[str, float]:
    """One run; the mean oracle CTR of the posters each policy showed."""
    video_to_posters = catalog["video_to_posters"]
    features = catalog["poster_to_features"]
    poster_to_video = {p: v for v, ps in video_to_posters.items() for p in ps}
    model = ClickModel(features, params, poster_to_video, users)
    oracle = Oracle(model)
    sim = TrafficSimulator(users, model)
    sim.generator = np.random.default_rng([seed, 1])
    rng = np.random.default_rng(seed)
    learner = Learner(settings, seed)
    choosers = {name: chooser(name, settings, features) for name in policies}
    variant_of = {u.user_id: policies[i % len(policies)] for i, u in enumerate(users)}
    shown = {name: [0.0, 0] for name in policies}
    late = {name: [0.0, 0] for name in policies}
    late_from_s = seconds * 2 / 3
    videos = list(video_to_posters)
    window_s = settings["attribution_window_s"]
    next_flush = flush_s
    for i in range(int(seconds * rate)):
        t_s = i / rate
        if t_s >= next_flush:
            learner.flush(t_s)
            next_flush += flush_s
        user = sim.draw_user()
        name = variant_of[user.user_id]
        row = [videos[j] for j in sim.generator.permutation(len(videos))]
        picked = []
        for video in row:
            posters = video_to_posters[video]
            poster = posters[choosers[name](learner, user, posters, rng)]
            picked.append((video, poster))
            expected = oracle.expected(user, poster, t_s)
            for acc in (
                (shown[name], late[name]) if t_s >= late_from_s else (shown[name],)
            ):
                acc[0] += expected
                acc[1] += 1
            learner.impression(t_s, video, poster, user.context(), features[poster])
        for click in sim.respond(user, picked, t_s):
            if click.duplicate or click.delay_s > window_s:
                continue
            learner.click(
                t_s + click.delay_s,
                click.video_id,
                click.poster_id,
                user.context(),
                features[click.poster_id],
            )
    out = {name: total / max(n, 1) for name, (total, n) in shown.items()}
    out.update(
        (f"{name} (last third)", total / max(n, 1)) for name, (total, n) in late.items()
    )
    return out


def read_catalog(parser: argparse.ArgumentParser, path: Path) -> dict[str, Any]:
    """The demo's ``catalog.json``, checked; a usage error when it is not one."""
    try:
        catalog = orjson.loads(path.read_bytes())
        posters, features = catalog["video_to_posters"], catalog["poster_to_features"]
        ok = (
            posters
            and all(isinstance(ps, list) and ps for ps in posters.values())
            and all(
                isinstance(p, str)
                and isinstance(features.get(p), dict)
                and all(
                    isinstance(v, int | float) and not isinstance(v, bool)
                    for v in features[p].values()
                )
                for ps in posters.values()
                for p in ps
            )
        )
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        parser.error(f"--catalog {path}: not a demo catalog.json ({e!r})")
    if not ok:
        parser.error(
            f"--catalog {path}: every video needs a list of posters, and every "
            "poster an object of numeric features"
        )
    return catalog


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--rate", type=float, default=50.0, help="rows per second")
    parser.add_argument("--flush-s", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a keyart setting for the policies, e.g. fm_temperature=0.1",
    )
    parser.add_argument("--fm-learning-rate", type=float, default=None)
    args = parser.parse_args(argv)
    for name in ("seconds", "rate", "flush_s", "fm_learning_rate"):
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            parser.error(f"--{name.replace('_', '-')} must be a positive number")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    policies = list(dict.fromkeys(args.policies.split(",")))
    unknown = [p for p in policies if p not in POLICY_CLASSES]
    if unknown or not {"random", "thompson"} <= set(policies):
        parser.error(
            f"--policies: unknown {unknown}; the lifts need random and thompson; "
            f"known: {', '.join(sorted(POLICY_CLASSES))}"
        )
    catalog = read_catalog(parser, args.catalog)
    # The demo's settings: its attribution window is a minute, not the default.
    updates: dict[str, Any] = {"attribution_window_s": DemoOptions.attribution_window_s}
    for item in args.set:
        name, _, value = item.partition("=")
        if name not in Settings.model_fields:
            parser.error(f"--set {item!r}: expected NAME=VALUE, NAME a keyart setting")
        updates[name] = value
    try:
        settings = Settings(**updates).model_dump()
    except ValidationError as e:
        parser.error(f"--set: {e.errors()[0]['loc'][0]}: {e.errors()[0]['msg']}")
    users = load_users()
    if args.fm_learning_rate is not None:
        import streams.fm_shard

        streams.fm_shard.FM_LEARNING_RATE = args.fm_learning_rate
    results: dict[str, list[float]] = {}
    started = time.perf_counter()
    for run in range(args.runs):
        params = ClickParams(seed=args.seed)
        ctr = play(
            catalog,
            users,
            settings,
            params,
            args.seconds,
            args.rate,
            args.flush_s,
            seed=args.seed * 1000 + run,
            policies=policies,
        )
        for name, value in ctr.items():
            results.setdefault(name, []).append(value)
        print(
            f"run {run}: "
            + ", ".join(f"{n} {100 * v:.2f}%" for n, v in ctr.items())
            + f"  ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
    width = max(len(name) for name in results) + 1
    header = f"{'expected CTR %':>15} {'vs random %':>12} {'vs TS %':>9}"
    print(f"\n{'policy':<{width}} {header}")
    for name, values in results.items():
        part = name[name.find(" ") :] if " " in name else ""
        v = np.array(values)
        lift_r = 100 * (v / np.array(results.get("random" + part, np.nan)) - 1)
        lift_t = 100 * (v / np.array(results.get("thompson" + part, np.nan)) - 1)
        print(
            f"{name:<{width}} {100 * v.mean():>15.2f} "
            f"{lift_r.mean():>+8.1f} ({(lift_r > 0).sum()}/{len(v)})"
            f" {lift_t.mean():>+6.1f} ({(lift_t > 0).sum()}/{len(v)})"
        )


if __name__ == "__main__":
    main()
