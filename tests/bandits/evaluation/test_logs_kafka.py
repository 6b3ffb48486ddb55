"""Reports from real events that went through the real broker.

One module-scoped log is produced with batching (so the broker's ListOffsets
under-reports the end of each partition) and read back by the loader, the
report library and the ``keyart report`` / ``keyart evaluate`` commands.

The log, with attribution window 60 s:

* variant A: users a0..a29, two impressions each (60), placement home for
  even users and search for odd ones; users a0..a5 clicked their first
  impression (6 clicks); user a6 clicked 2 minutes late (not credited).
* variant B: users b0..b19, two impressions each (40); users b0..b7 clicked
  their second impression (8 clicks).
* noise that must not count: 5 repeated impression events, 2 repeated clicks,
  a click on an unknown impression, one undecodable impression record.
* the first impression of every user is at hour 0, the second at hour 1.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from bandits.evaluation.logs import EventLogs, load_kafka_logs, read_topic
from bandits.evaluation.reports import ab_report, time_table, variant_table
from keyart.settings import Settings
from producers.events import EventProducer

HOUR = 3_600_000
T0 = 1_700_000_000_000
POSTERS = {"v1": ["p1", "p2", "p3"], "v2": ["p4", "p5", "p6"]}


def _events() -> tuple[
    list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]
]:
    decisions, impressions, clicks = [], [], []
    for variant, users in (("A", 30), ("B", 20)):
        for u in range(users):
            user = f"{variant.lower()}{u}"
            for shot in range(2):
                video = "v1" if (u + shot) % 2 == 0 else "v2"
                poster = POSTERS[video][(u + shot) % 3]
                event = f"i-{user}-{shot}"
                when = T0 + shot * HOUR + u
                decisions.append(
                    {
                        "event_id": f"d-{user}-{shot}",
                        "event_time": when,
                        "user_id": user,
                        "video_id": video,
                        "poster_id": poster,
                        "placement": "home" if u % 2 == 0 else "search",
                        "variant": variant,
                        "policy": "random" if variant == "A" else "thompson",
                        "propensity": 1 / 3,
                        "candidates": POSTERS[video],
                        "fallback": variant == "B" and u == 0,
                        "context": {"age": u / 30},
                    }
                )
                impressions.append(
                    {
                        "event_id": event,
                        "event_time": when,
                        "user_id": user,
                        "video_id": video,
                        "poster_id": poster,
                        "placement": "home" if u % 2 == 0 else "search",
                        "variant": variant,
                        "policy": "random" if variant == "A" else "thompson",
                        "propensity": 1 / 3,
                        "decision_id": f"d-{user}-{shot}",
                        "context": {"age": u / 30},
                    }
                )
                clicked = (variant == "A" and u < 6 and shot == 0) or (
                    variant == "B" and u < 8 and shot == 1
                )
                late = variant == "A" and u == 6 and shot == 0
                if clicked or late:
                    clicks.append(
                        {
                            "event_id": f"c-{event}",
                            "event_time": when + (120_000 if late else 5_000),
                            "impression_id": event,
                            "user_id": user,
                            "video_id": video,
                            "poster_id": poster,
                        }
                    )
    return decisions, impressions, clicks


@pytest.fixture(scope="module")
def kafka_settings(make_settings: Callable[..., Settings]) -> Iterator[Settings]:
    settings = make_settings(topics=True, attribution_window_s=60.0)
    decisions, impressions, clicks = _events()
    producer = EventProducer(settings, config={"linger.ms": 50})
    for record in decisions:
        producer.send("decision", record)
    for record in impressions + impressions[:5]:
        producer.send("impression", record)
    for record in clicks + clicks[:2]:
        producer.send("click", record)
    producer.send(
        "click", {**clicks[0], "event_id": "c-ghost", "impression_id": "nope"}
    )
    producer.send_raw(producer.topic_for("impression"), b"not an event", b"v1")
    producer.flush()
    yield settings


@pytest.fixture(scope="module")
def logs(kafka_settings: Settings) -> EventLogs:
    return load_kafka_logs(kafka_settings)


def test_read_topic_reaches_the_fetch_high_watermark(kafka_settings: Settings) -> None:
    records, bad = read_topic(kafka_settings, "impression")
    assert (len(records), bad) == (105, 1)
    clicks, bad = read_topic(kafka_settings, "click")
    assert (len(clicks), bad) == (18, 0)


def test_loader_dedupes_and_attributes(logs: EventLogs) -> None:
    assert logs.undecodable == {"decision": 0, "impression": 1, "click": 0}
    assert len(logs.decisions) == 100
    assert len(logs.impressions) == 100
    assert logs.impressions["event_id"].is_unique
    assert int(logs.impressions["clicked"].sum()) == 14  # the late click is not


def test_variant_table_counts(logs: EventLogs) -> None:
    table = variant_table(logs.impressions).set_index("variant")
    assert table.loc["A", ["impressions", "clicks", "users", "clickers"]].tolist() == [
        60,
        6,
        30,
        6,
    ]
    assert table.loc["B", ["impressions", "clicks", "users", "clickers"]].tolist() == [
        40,
        8,
        20,
        8,
    ]
    assert table.loc["A", "ctr"] == pytest.approx(0.1)
    assert table.loc["B", "uctr"] == pytest.approx(0.4)
    assert table.loc["A", "ctr_low"] < 0.1 < table.loc["A", "ctr_high"]


def test_time_table_by_hour(logs: EventLogs) -> None:
    table = time_table(logs.impressions, every_s=3600)
    table["hour"] = (table["bucket_ms"] - table["bucket_ms"].min()) // HOUR
    found = table[["hour", "variant", "impressions", "clicks"]].values.tolist()
    assert found == [[0, "A", 30, 6], [0, "B", 20, 0], [1, "A", 30, 0], [1, "B", 20, 8]]


def test_ab_report_on_kafka_logs(logs: EventLogs) -> None:
    report = ab_report(logs.impressions, logs.decisions, control="A")
    row = report.comparisons.iloc[0]
    assert (row["clicks_a"], row["trials_a"], row["clicks_b"], row["trials_b"]) == (
        6,
        60,
        8,
        40,
    )
    assert report.srm is not None and report.srm.observed == {"A": 30, "B": 20}
    fallbacks = {g.variant: g.value for g in report.guardrails}
    assert fallbacks == {"A": 0.0, "B": pytest.approx(2 / 40)}


def _run(settings: Settings, tmp_path: Any, *args: str) -> Any:
    from keyart.cli import app

    env = {
        "KEYART_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "KEYART_TOPIC_PREFIX": settings.topic_prefix,
        "KEYART_REDIS_URL": settings.redis_url,
        "KEYART_REDIS_PREFIX": settings.redis_prefix,
        "KEYART_ATTRIBUTION_WINDOW_S": "60",
        "KEYART_STATE_DIR": str(tmp_path),
    }
    return CliRunner().invoke(app, list(args), env=env)


def test_report_command_on_kafka(kafka_settings: Settings, tmp_path: Any) -> None:
    result = _run(
        kafka_settings, tmp_path, "report", "--by", "variant,placement", "--json"
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    counts = {
        (r["variant"], r["placement"]): (r["impressions"], r["clicks"]) for r in rows
    }
    assert counts == {
        ("A", "home"): (30, 3),
        ("A", "search"): (30, 3),
        ("B", "home"): (20, 4),
        ("B", "search"): (20, 4),
    }
    # Only the second hour: A had no clicks there, B all of its 8.
    since = str(T0 + HOUR)
    result = _run(kafka_settings, tmp_path, "report", "--since", since, "--json")
    rows = {r["variant"]: r for r in json.loads(result.stdout)["rows"]}
    assert (rows["A"]["impressions"], rows["A"]["clicks"]) == (30, 0)
    assert (rows["B"]["impressions"], rows["B"]["clicks"]) == (20, 8)


def test_report_table_and_ab(kafka_settings: Settings, tmp_path: Any) -> None:
    result = _run(
        kafka_settings,
        tmp_path,
        "report",
        "--ab",
        "--control",
        "A",
        "--split",
        "A=0.6,B=0.4",
        "--latency-p99",
        "A=10,B=90",
    )
    assert result.exit_code == 0, result.output
    assert "always_valid_p" in result.stdout
    assert "SRM chi2=0.00" in result.stdout
    assert "latency_p99_ms = 90 (limit 50) BREACHED" in result.stdout


def test_evaluate_command_on_kafka(kafka_settings: Settings, tmp_path: Any) -> None:
    result = _run(
        kafka_settings,
        tmp_path,
        "evaluate",
        "--policies",
        "logging,uniform",
        "--bootstrap",
        "0",
        "--json",
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["train"] + payload["evaluated"] == 100
    logging_ips = [
        e
        for e in payload["estimates"]
        if e["policy"] == "logging" and e["estimator"] == "ips"
    ][0]
    assert logging_ips["estimate"] == pytest.approx(payload["observed"]["estimate"])
    # Candidates come from the decisions: 3 posters each, propensity 1/3, so the
    # uniform target has weight 1 everywhere too.
    uniform_ips = [
        e
        for e in payload["estimates"]
        if e["policy"] == "uniform" and e["estimator"] == "ips"
    ][0]
    assert uniform_ips["mean_weight"] == pytest.approx(1.0)


def test_bad_inputs_name_the_option(kafka_settings: Settings, tmp_path: Any) -> None:
    result = _run(kafka_settings, tmp_path, "report", "--by", "colour")
    assert result.exit_code == 2 and "cannot slice by ['colour']" in result.output
    result = _run(kafka_settings, tmp_path, "report", "--since", "yesterday")
    assert result.exit_code == 2 and "--since" in result.output
    result = _run(kafka_settings, tmp_path, "evaluate", "--policies", "oracle")
    assert result.exit_code == 2 and "--policies" in result.output
    missing = _run(
        kafka_settings.model_copy(update={"topic_prefix": "nosuch"}), tmp_path, "report"
    )
    assert missing.exit_code == 1 and "not found" in missing.output


def test_split_stored_in_redis(kafka_settings: Settings, tmp_path: Any) -> None:
    import redis

    from keyart.keys import Keys

    client = redis.Redis.from_url(kafka_settings.redis_url)
    key = Keys(kafka_settings.redis_prefix).config("experiments")
    document = {"salt": "s", "variants": [{"name": "A", "weight": 0.6}]}
    document["variants"].append({"name": "B", "weight": 0.4})
    client.hset(key, mapping={"version": 1, "data": json.dumps(document)})
    env_extra = ("--ab", "--split", "stored", "--json")
    try:
        result = _run(kafka_settings, tmp_path, "report", *env_extra)
        assert result.exit_code == 0, result.output
        srm = json.loads(result.stdout)["ab"]["srm"]
        assert srm["expected_share"] == {"A": 0.6, "B": 0.4}
        assert srm["observed"] == {"A": 30, "B": 20} and not srm["mismatch"]
        # A configured variant that served nobody is a mismatch.
        document["variants"].append({"name": "C", "weight": 0.5})
        client.hset(key, mapping={"version": 2, "data": json.dumps(document)})
        result = _run(kafka_settings, tmp_path, "report", *env_extra)
        ab = json.loads(result.stdout)["ab"]
        assert ab["srm"]["observed"]["C"] == 0 and ab["srm"]["mismatch"]
        assert any("SRM" in w for w in ab["warnings"])
    finally:
        client.delete(key)
        client.close()


def test_an_unreachable_split_names_the_redis_without_its_password(make_settings):
    from bandits.evaluation.logs import LogReadError, configured_split
    from keyart.stack import free_port

    url = f"redis://keyart:split-pw@127.0.0.1:{free_port(0)}/0"
    with pytest.raises(LogReadError) as raised:
        configured_split(make_settings(redis_url=url))
    assert "split-pw" not in str(raised.value)
    shown = url.replace("split-pw", "***")
    assert str(raised.value).startswith(
        f"cannot read the experiment split at KEYART_REDIS_URL={shown}: "
    )
