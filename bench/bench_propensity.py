"""How long a Thompson-sampling propensity takes inside a request.

Target: under 0.3 ms for k = 20 candidates and n = 1000 Monte Carlo draws.
Printed beside two figures measured in the same run: the ceiling (a bare numpy
argmax-and-count over an already drawn (n, k) matrix, the part no sampler can
avoid) and numpy's own Beta sampler doing the same job.

Run: ``python bench/bench_propensity.py``
"""

from __future__ import annotations

import timeit

import numpy as np

from bandits.policies import ThompsonSampling
from bandits.propensity import monte_carlo_propensity
from bandits.state import ArmStats

K, N, REPEAT = 20, 1000, 400


def per_call_ms(fn) -> float:
    fn()  # warm caches (Gamma quantile tables of small shapes)
    best = min(timeit.repeat(fn, number=REPEAT, repeat=5))
    return best / REPEAT * 1e3


def scenario(n_new: int, rng: np.random.Generator) -> list[ArmStats]:
    stats = []
    for i in range(K):
        if i < n_new:
            stats.append(ArmStats(int(i * 3), 0, int(i * 3), 0))
        else:
            n = int(rng.integers(2_000, 50_000))
            c = int(rng.binomial(n, rng.uniform(0.02, 0.08)))
            stats.append(ArmStats(n, c, n, c))
    return stats


def main() -> None:
    rng = np.random.default_rng(0)
    policy = ThompsonSampling()

    drawn = rng.random((N, K))
    ceiling = per_call_ms(lambda: np.bincount(drawn.argmax(axis=1), minlength=K)[3])
    print(f"k={K} n={N}; ceiling (bare numpy argmax + count): {ceiling:.3f} ms")

    for n_new in (0, 5, 20):
        stats = scenario(n_new, rng)
        a, b = policy.posterior(stats)

        def ours(stats=stats) -> float:
            return monte_carlo_propensity(
                lambda g, n: policy.sample_scores(stats, g, n), 3, rng, N
            )

        def numpy_beta(a=a, b=b) -> int:
            draws = rng.beta(a, b, size=(N, K))
            return int(np.bincount(draws.argmax(axis=1), minlength=K)[3])

        print(
            f"  {n_new:2d} arms with < 30 clicks: ours {per_call_ms(ours):.3f} ms"
            f" | numpy rng.beta + argmax {per_call_ms(numpy_beta):.3f} ms"
            f" | ceiling {ceiling:.3f} ms"
        )


if __name__ == "__main__":
    main()
