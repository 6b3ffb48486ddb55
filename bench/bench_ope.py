"""Cost of off-policy evaluation on a million logged decisions.

A log of 1,000,000 decisions with 8 candidates each (8,000,000 candidate
pairs) is evaluated with IPS, SNIPS and doubly robust (per-action reward
model, 2-fold cross-fitting) for an epsilon-greedy target; each step is timed
on its own. Printed beside the
ceiling measured in the same run: one numpy pass that gathers the logged
pair's probability and sums every pair per row (the least any estimator over
this layout must read).

Run: ``python bench/bench_ope.py``
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from bandits.evaluation.feedback import LoggedBandit
from bandits.evaluation.ope import doubly_robust, evaluate, ips, snips
from bandits.evaluation.reward_models import cross_fit
from bandits.evaluation.targets import EpsilonGreedyPolicy, GreedyPolicy

N, K = 1_000_000, 8
ESTIMATORS3 = ["ips", "snips", "dr"]


def main() -> None:
    rng = np.random.default_rng(0)
    actions = rng.integers(0, K, N)
    rewards = (rng.random(N) < 0.03 + 0.01 * (actions % 3)).astype(float)
    log = LoggedBandit.from_arrays(
        actions, rewards, np.full(N, 1 / K), K, contexts=pd.DataFrame(index=range(N))
    )
    target = EpsilonGreedyPolicy(GreedyPolicy.fit(log), 0.1)
    probs = target.probabilities(log)

    start = time.perf_counter()
    ratio = probs[log.logged_pair] / log.propensities
    row_total = np.bincount(log.pair_row, weights=probs, minlength=N)
    _ = float((ratio * rewards).mean() + row_total.mean())
    ceiling = time.perf_counter() - start
    print(f"{N} decisions x {K} candidates ({N * K} pairs)")
    print(f"  ceiling (one gather + one per-row sum): {ceiling * 1e3:.0f} ms")

    steps = {
        "target probabilities": lambda: target.probabilities(log),
        "ips": lambda: ips(log, probs),
        "snips": lambda: snips(log, probs),
        "reward model (2 folds)": lambda: cross_fit(log, "action_mean", 2),
        "dr given the model": lambda: doubly_robust(log, probs, q_pairs),
        "evaluate(ips, snips, dr)": lambda: evaluate(log, [target], ESTIMATORS3),
    }
    q_pairs = cross_fit(log, "action_mean", 2)
    for name, step in steps.items():
        start = time.perf_counter()
        step()
        spent = time.perf_counter() - start
        print(f"  {name:24s}: {spent * 1e3:6.0f} ms ({spent / ceiling:5.1f}x ceiling)")


if __name__ == "__main__":
    main()
