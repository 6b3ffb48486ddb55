"""The simulator's pure parts: base rate, seeding, context, drift."""

from __future__ import annotations

import numpy as np
import pytest

from producers.simulator import ClickModel, ClickParams, Oracle, TrafficSimulator
from producers.users import CONTEXT_NAMES, SimUser, load_users


@pytest.fixture(scope="module")
def users(media) -> list[SimUser]:
    return load_users(media("ml100k_users.parquet.brotli"))


def catalog(n_posters: int = 8, seed: int = 0) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(seed)
    return {
        f"p{i}": {
            "face_count": float(rng.integers(0, 3)),
            "largest_face_share": float(rng.random() * 0.3),
            "warmth": float(rng.random() * 0.2),
            "brightness": float(rng.random()),
            "text_share": float(rng.random() * 0.05),
            "quality": float(rng.random()),
        }
        for i in range(n_posters)
    }


def test_real_users_load(users) -> None:
    assert len(users) == 943
    assert {u.gender for u in users} == {"M", "F"}
    assert set(users[0].context()) == set(CONTEXT_NAMES)


def test_base_rate_is_a_few_percent(users) -> None:
    model = ClickModel(catalog(), ClickParams(seed=3))
    mean = np.mean([model.ctr(u, p, 0.0) for u in users for p in model.posters])
    assert 0.015 < mean < 0.06
    # and no poster is absurd for anyone
    worst = max(model.ctr(u, p, 0.0) for u in users for p in model.posters)
    assert worst < 0.35


def test_the_best_poster_depends_on_the_user(users) -> None:
    model = ClickModel(catalog(), ClickParams(seed=3))
    oracle = Oracle(model)
    best = {oracle.best(u, model.posters, 0.0)[0] for u in users}
    assert len(best) >= 2


def test_seeded_runs_repeat_and_other_seeds_differ(users) -> None:
    def run(seed: int) -> list[tuple[str, list]]:
        sim = TrafficSimulator(users, ClickModel(catalog(), ClickParams(seed=seed)))
        out = []
        for step in range(3000):
            user = sim.draw_user()
            shown = [("v", "p0"), ("v", "p1"), ("v", "p2")]
            out.append((user.user_id, sim.respond(user, shown, float(step))))
        return out

    first, again, other = run(11), run(11), run(12)
    assert first == again
    assert first != other
    clicks = sum(len(c) for _, c in first)
    assert 0 < clicks < 0.1 * 3 * 3000


def test_click_delays_reach_past_a_one_minute_window(users) -> None:
    sim = TrafficSimulator(
        users, ClickModel(catalog(), ClickParams(seed=5, base_ctr=0.2))
    )
    delays = []
    while len(delays) < 2000:
        user = sim.draw_user()
        delays += [c.delay_s for c in sim.respond(user, [("v", "p0")], 0.0)]
    delays_arr = np.array(delays)
    assert np.median(delays_arr) < 30
    assert 0.01 < np.mean(delays_arr > 60) < 0.2


def test_drift_changes_the_best_poster(users) -> None:
    params = ClickParams(seed=3, drift_at_s=100.0)
    model = ClickModel(catalog(), params, dict.fromkeys(catalog(), "v"), users)
    before = max(model.posters, key=lambda p: model.mean_ctr(users, p, 0.0))
    after = max(model.posters, key=lambda p: model.mean_ctr(users, p, 150.0))
    assert before != after
    assert model.mean_ctr(users, before, 150.0) < model.mean_ctr(users, before, 0.0)
    worst = min(model.posters, key=lambda p: model.mean_ctr(users, p, 0.0))
    assert model.mean_ctr(users, worst, 150.0) > model.mean_ctr(users, worst, 0.0)
    # only those two change
    for poster in set(model.posters) - {before, worst}:
        assert model.ctr(users[0], poster, 150.0) == model.ctr(users[0], poster, 0.0)


def test_regret_is_zero_for_the_best_and_positive_otherwise(users) -> None:
    model = ClickModel(catalog(), ClickParams(seed=3))
    oracle = Oracle(model)
    user = users[0]
    best, _ = oracle.best(user, model.posters, 0.0)
    assert oracle.regret(user, best, model.posters, 0.0) == 0.0
    others = [p for p in model.posters if p != best]
    assert all(oracle.regret(user, p, model.posters, 0.0) > 0 for p in others)


def test_headroom_orders_random_single_and_per_user_best(users) -> None:
    model = ClickModel(catalog(), ClickParams(seed=3))
    room = Oracle(model).headroom(users, model.posters)
    assert room["random"] < room["best_single"] < room["per_user_best"]


def test_the_model_follows_what_posters_look_like_not_their_ids(users) -> None:
    posters = catalog()
    renamed = {f"job2-{name}": features for name, features in posters.items()}
    first = ClickModel(posters, ClickParams(seed=3))
    second = ClickModel(renamed, ClickParams(seed=3))
    for name in posters:
        assert first.ctr(users[5], name, 0.0) == second.ctr(
            users[5], f"job2-{name}", 0.0
        )


def test_each_video_gets_the_same_spread_of_taste(users) -> None:
    # Two videos whose posters differ only in how far apart their traits are:
    # one video's frames look alike, the other's do not.
    alike = catalog(4, seed=5)
    apart = {
        f"q{i}": {k: 10.0 * v for k, v in looks.items()}
        for i, looks in enumerate(alike.values())
    }
    to_video = {**dict.fromkeys(alike, "alike"), **dict.fromkeys(apart, "apart")}
    model = ClickModel({**alike, **apart}, ClickParams(seed=3), to_video)

    def spread(posters: list[str]) -> float:
        rates = [[model.ctr(u, p, 0.0) for p in posters] for u in users[:200]]
        return float(np.ptp(np.log(rates), axis=1).mean())

    # Standardised within each video, the two videos' choices are equally
    # personal; over the whole catalog, "alike" would look all the same.
    assert spread(sorted(alike)) == pytest.approx(spread(sorted(apart)), rel=0.2)
