"""Rate intervals against numbers computed by hand (z = 1.959964 for 95%)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bandits.evaluation.intervals import (
    agresti_coull,
    difference_newcombe,
    lift_log_ratio,
    ratio_bootstrap,
    ratio_delta,
    uctr,
    wilson,
    z_value,
)


def test_z_value() -> None:
    assert z_value(0.95) == pytest.approx(1.959964, abs=1e-6)
    with pytest.raises(ValueError, match="confidence"):
        z_value(1.0)


def test_wilson_three_of_ten() -> None:
    # p = 0.3, z^2/n = 0.3841459; centre = (0.3 + 0.1920729) / 1.3841459 = 0.355506
    # half = 1.959964 / 1.3841459 * sqrt(0.021 + 0.0096036) = 0.247714
    w = wilson(3, 10)
    assert w.estimate == pytest.approx(0.3)
    assert w.low == pytest.approx(0.355506 - 0.247714, abs=1e-5)
    assert w.high == pytest.approx(0.355506 + 0.247714, abs=1e-5)
    assert w.method == "wilson" and w.covers(0.3)


def test_wilson_zero_of_ten() -> None:
    # centre = 0.1920729 / 1.3841459 = 0.138767; half = 1.41601 * sqrt(0.0096036)
    # = 0.138767: the interval is [0, 0.277534]
    w = wilson(0, 10)
    assert w.low == 0.0
    assert w.high == pytest.approx(0.277534, abs=1e-5)


def test_wilson_without_trials_and_bad_counts() -> None:
    w = wilson(0, 0)
    assert math.isnan(w.estimate) and (w.low, w.high) == (0.0, 1.0)
    with pytest.raises(ValueError, match="successes <= trials"):
        wilson(11, 10)


def test_agresti_coull_three_of_ten() -> None:
    # n~ = 13.841459, p~ = (3 + 1.9207295) / 13.841459 = 0.355506
    # half = 1.959964 * sqrt(0.355506 * 0.644494 / 13.841459) = 0.252167
    a = agresti_coull(3, 10)
    assert a.low == pytest.approx(0.355506 - 0.252167, abs=1e-5)
    assert a.high == pytest.approx(0.355506 + 0.252167, abs=1e-5)


def test_ratio_delta_by_hand() -> None:
    # Users (clicks, impressions): (1,2) (0,1) (2,3) (0,2); R = 3/8 = 0.375.
    # s_y^2 = 2.75/3, s_x^2 = 2/3, s_xy = 2/3, xbar = 2, n = 4:
    # var = (0.916667 - 2*0.375*0.666667 + 0.140625*0.666667) / (4 * 4) = 0.031901
    # half = 1.959964 * 0.178609 = 0.350068
    r = ratio_delta(np.array([1, 0, 2, 0]), np.array([2, 1, 3, 2]))
    assert r.estimate == pytest.approx(0.375)
    assert r.low == pytest.approx(0.375 - 0.350068, abs=1e-5)
    assert r.high == pytest.approx(0.375 + 0.350068, abs=1e-5)


def test_ratio_delta_needs_two_units() -> None:
    r = ratio_delta(np.array([1.0]), np.array([2.0]))
    assert r.estimate == 0.5 and r.high == math.inf
    with pytest.raises(ValueError, match="equally long"):
        ratio_delta(np.array([1, 2]), np.array([1]))


def test_bootstrap_is_seeded_and_agrees_with_delta_on_many_users() -> None:
    rng = np.random.default_rng(5)
    shown = 1 + rng.poisson(3, 3000)
    clicks = rng.binomial(shown, rng.beta(2, 18, 3000))
    delta = ratio_delta(clicks, shown)
    boot = ratio_bootstrap(clicks, shown, resamples=2000, seed=1)
    again = ratio_bootstrap(clicks, shown, resamples=2000, seed=1)
    other = ratio_bootstrap(clicks, shown, resamples=2000, seed=2)
    assert boot == again and boot != other
    assert boot.estimate == pytest.approx(delta.estimate)
    assert boot.width == pytest.approx(delta.width, rel=0.1)


def test_uctr_by_hand() -> None:
    # Users a (clicked), b, c: UCTR = 1/3; Wilson over 3 users.
    users = np.array(["a", "a", "b", "c"])
    clicks = np.array([0, 1, 0, 0])
    w = uctr(users, clicks)
    assert w.estimate == pytest.approx(1 / 3)
    assert (w.low, w.high) == (wilson(1, 3).low, wilson(1, 3).high)
    # Delta over users: sd of (1, 0, 0) is 0.57735, se 0.333333, half 0.653321.
    d = uctr(users, clicks, method="delta")
    assert d.low == 0.0
    assert d.high == pytest.approx(1 / 3 + 0.653321, abs=1e-5)
    b = uctr(users, clicks, method="bootstrap", seed=3)
    assert b.method == "bootstrap" and b.low <= 1 / 3 <= b.high
    with pytest.raises(ValueError, match="method"):
        uctr(users, clicks, method="exact")


def test_newcombe_difference_by_hand() -> None:
    # Wilson 3/10 = [0.107792, 0.603220], 6/10 = [0.312674, 0.831820], d = 0.3
    # low = 0.3 - sqrt((0.6 - 0.312674)^2 + (0.603220 - 0.3)^2) = -0.117732
    # high = 0.3 + sqrt((0.831820 - 0.6)^2 + (0.3 - 0.107792)^2) = 0.601139
    d = difference_newcombe(3, 10, 6, 10)
    assert d.estimate == pytest.approx(0.3)
    assert d.low == pytest.approx(-0.117732, abs=1e-5)
    assert d.high == pytest.approx(0.601139, abs=1e-5)


def test_lift_by_hand() -> None:
    # log(0.045 / 0.03) = 0.405465; se = sqrt(1/45 - 1/1000 + 1/30 - 1/1000)
    # = 0.231421; exp(0.405465 -/+ 0.453578) - 1 = -0.046972 / 1.360896
    lift = lift_log_ratio(30, 1000, 45, 1000)
    assert lift.estimate == pytest.approx(0.5)
    assert lift.low == pytest.approx(-0.046972, abs=1e-5)
    assert lift.high == pytest.approx(1.360896, abs=1e-5)


def test_lift_with_no_clicks_uses_haldane() -> None:
    # (0.5/100.5) / (5.5/100.5) = 1/11; se = sqrt(2 - 2/100.5 + 1/5.5 - 1/100.5)
    lift = lift_log_ratio(5, 100, 0, 100)
    assert lift.method == "log-ratio+0.5"
    assert lift.estimate == pytest.approx(-1.0)
    se = math.sqrt(1 / 0.5 - 1 / 100.5 + 1 / 5.5 - 1 / 100.5)
    assert lift.high == pytest.approx(math.exp(math.log(1 / 11) + 1.959964 * se) - 1)
