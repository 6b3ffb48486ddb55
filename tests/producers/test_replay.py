"""The Open Bandit log as keyart events, and the replay estimator."""

from __future__ import annotations

from producers.replay import OBD_VIDEO, load_obd, poster_of_item, round_events


def test_obd_log_loads_real_rounds(media) -> None:
    log = load_obd(media("obd_random_all.csv"))
    assert len(log.rounds) == 10_000
    assert log.n_items == 80
    assert 30 <= log.clicks <= 80  # the sample holds a few dozen real clicks
    assert {r.propensity for r in log.rounds} == {0.0125}
    times = [r.time_ms for r in log.rounds]
    assert times == sorted(times)
    # every round has exactly one hot code per user feature
    assert all(len(r.context) == 4 for r in log.rounds)
    assert log.context_matrix().sum(axis=1).tolist() == [4.0] * 10_000


def test_round_events_are_deterministic_and_fit_the_schema(media) -> None:
    from schemas.codec import get_codec

    log = load_obd(media("obd_random_all.csv"), limit=3000)
    clicked = next(r for r in log.rounds if r.click)
    first = list(round_events(clicked))
    again = list(round_events(clicked))
    assert first == again
    kinds = [kind for kind, _ in first]
    assert kinds == ["impression", "click"]
    impression, click = first[0][1], first[1][1]
    assert click["impression_id"] == impression["event_id"]
    assert impression["video_id"] == click["video_id"] == OBD_VIDEO
    assert impression["poster_id"] == poster_of_item(clicked.item_id)
    codec = get_codec()
    for kind, record in first:
        assert (
            codec.decode(kind, codec.encode(kind, record))["event_id"]
            == (record["event_id"])
        )


def test_replay_of_a_fixed_item_is_that_items_logged_ctr(media) -> None:
    from producers.replay_policies import FixedPolicy, replay

    log = load_obd(media("obd_random_all.csv"))
    item = max(
        range(log.n_items),
        key=lambda i: sum(r.click for r in log.rounds if r.item_id == i),
    )
    shown = [r for r in log.rounds if r.item_id == item]
    result = replay(log, FixedPolicy(item))
    assert result.matched == len(shown)
    assert result.clicks == sum(r.click for r in shown) > 0
    assert result.curve[-1] == (shown[-1].index, len(shown), result.clicks)


def test_uniform_policy_matches_about_one_round_in_n_items(media) -> None:
    from producers.replay_policies import UniformPolicy, replay

    log = load_obd(media("obd_random_all.csv"))
    result = replay(log, UniformPolicy(log.n_items, seed=1))
    expected = len(log.rounds) / log.n_items
    assert abs(result.matched - expected) < 4 * expected**0.5
    again = replay(log, UniformPolicy(log.n_items, seed=1))
    assert (again.matched, again.clicks) == (result.matched, result.clicks)


def test_learning_policies_replay_and_learn_only_from_matched_rounds(media) -> None:
    from producers.replay import load_item_features
    from producers.replay_policies import demo_policies, replay

    log = load_obd(media("obd_random_all.csv"), limit=3000)
    items = load_item_features(media("obd_item_context.csv"))
    assert len(items) == log.n_items
    for policy in demo_policies(log, items, seed=3):
        result = replay(log, policy)
        assert 0 < result.matched < len(log.rounds) / 10, policy.name
        assert result.clicks <= result.matched
        if policy.name == "linucb":
            assert policy.model.n_updates == result.matched
