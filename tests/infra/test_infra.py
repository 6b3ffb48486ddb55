"""infra/: promtool accepts the rules, the config and keyart's real /metrics,
and every metric the alerts and the dashboard query is defined in keyart's code.

promtool comes from Debian's ``prometheus`` package. Without it these tests
fail (they do not skip): CI must install it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client import CollectorRegistry

from keyart.health import HealthServer
from keyart.lag import LagCollector

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
ALERTS = INFRA / "prometheus" / "alerts.yml"
DASHBOARD = INFRA / "grafana" / "dashboards" / "keyart.json"
PACKAGES = (
    "keyart", "gateway", "streams", "workers", "producers", "bandits", "ranking",
)  # fmt: skip

# Series Prometheus makes itself, not any exporter.
PROMETHEUS_OWN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
PROMQL_WORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
    "group_right", "bool", "offset", "inf", "nan",
}  # fmt: skip


def promtool(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is missing: install Debian's prometheus package "
            "(apt-get install -y prometheus); infra checks cannot run without it"
        )
    return subprocess.run(
        [path, *args], input=stdin, capture_output=True, timeout=60, check=False
    )


def defined_metrics() -> set[str]:
    """Exposed names of every metric keyart's code defines with prometheus_client."""
    pattern = re.compile(
        r"\b(?:Counter|Gauge|Histogram|Summary|Info|Enum|\w+MetricFamily)\(\s*"
        r"[\"']([a-zA-Z_:][a-zA-Z0-9_:]*)[\"']"
    )
    names: set[str] = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for name in pattern.findall(path.read_text()):
                base = name.removesuffix("_total")
                names.add(base)
                names.update(
                    base + suffix
                    for suffix in ("_total", "_created", "_bucket", "_sum", "_count")
                )
                names.add(base + "_info")
    return names


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr
    )
    names = set()
    for match in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", expr):
        word, call = match.groups()
        if call or word.lower() in PROMQL_WORDS or word[0].isdigit():
            continue
        names.add(word)
    return names


def alert_exprs() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def test_promtool_accepts_the_alert_rules() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert b"SUCCESS" in result.stdout


def test_promtool_accepts_the_scrape_config() -> None:
    result = promtool("check", "config", str(INFRA / "prometheus" / "prometheus.yml"))
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_metric_name_parser() -> None:
    expr = (
        'sum by (group, topic) (rate(keyart_a_total{topic=~"x.y"}[5m])) '
        "/ clamp_min(sum(keyart_b), 1e-9) > 0.05 and on (job) up"
    )
    assert metric_names(expr) == {"keyart_a_total", "keyart_b", "up"}


@pytest.fixture(scope="module")
def served_metrics() -> str:
    """Real /metrics of a keyart process with the gateway's and the learner's
    metrics in use."""
    import gateway.metrics as gm
    import streams.metrics as sm

    gm.ROW_SECONDS.observe(0.004)
    gm.REDIS_SECONDS.observe(0.001)
    gm.DECISIONS.labels(variant="control", policy="thompson").inc()
    gm.FALLBACKS.labels(reason="no_state").inc()
    gm.COLLECTED.labels(kind="click", outcome="produced").inc()
    sm.EVENTS.labels(topic="impressions").inc(5)
    sm.FLUSH_SECONDS.observe(0.002)
    sm.STATE_AGE.set(0.4)
    sm.DEAD_LETTERS.labels(topic="clicks").inc()
    with HealthServer({"always": lambda: (True, "ok")}, port=0) as server:
        urllib.request.urlopen(server.url + "/readyz", timeout=10).read()  # noqa: S310
        body = urllib.request.urlopen(server.url + "/metrics", timeout=10).read()  # noqa: S310
    return body.decode()


def test_promtool_accepts_a_process_metrics(served_metrics: str) -> None:
    assert "keyart_gateway_decision_seconds_bucket" in served_metrics
    assert "keyart_ready_check" in served_metrics
    assert "keyart_streams_state_age_seconds 0.4" in served_metrics
    result = promtool("check", "metrics", stdin=served_metrics.encode())
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_promtool_accepts_the_lag_exporter_metrics(settings) -> None:
    topic = settings.topic("clicks")
    group = "infra-" + uuid.uuid4().hex[:6]
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for i in range(4):
        producer.produce(topic, b"c%d" % i, partition=0)
    assert producer.flush(10) == 0
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka_bootstrap, "group.id": group}
    )
    consumer.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)
    consumer.close()

    registry = CollectorRegistry()
    registry.register(
        LagCollector(settings.kafka_bootstrap, [group], (settings.topic_prefix,))
    )
    with HealthServer(port=0, registry=registry, interval=0) as server:
        body = urllib.request.urlopen(server.url + "/metrics", timeout=30).read()  # noqa: S310
    text = body.decode()
    assert f'keyart_consumer_lag_messages{{group="{group}",partition="0"' in text
    assert "keyart_lag_up 1.0" in text
    result = promtool("check", "metrics", stdin=body)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_every_queried_metric_exists(source: str, served_metrics: str) -> None:
    exprs = alert_exprs() if source == "alerts" else dashboard_exprs()
    assert exprs, f"no queries found in the {source}"
    defined = defined_metrics()
    # Metrics prometheus_client adds to every process (process_*, python_*).
    served = {
        line.split("{")[0].split(" ")[0]
        for line in served_metrics.splitlines()
        if line and not line.startswith("#")
    }
    unknown = {
        f"{name} (in {expr!r})"
        for expr in exprs
        for name in metric_names(expr)
        if name not in defined and name not in served and name not in PROMETHEUS_OWN
    }
    assert not unknown, f"{source} query metrics keyart does not define: {unknown}"


def test_dashboard_uses_the_provisioned_data_source() -> None:
    datasources = yaml.safe_load(
        (INFRA / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"]
    uids = {d["uid"] for d in datasources}
    panels = json.loads(DASHBOARD.read_text())["panels"]
    used = {p["datasource"]["uid"] for p in panels if "datasource" in p}
    assert used and used <= uids
    provider = yaml.safe_load(
        (INFRA / "grafana/provisioning/dashboards/keyart.yml").read_text()
    )["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_parser_catches_an_unknown_metric() -> None:
    assert "keyart_no_such_metric" not in defined_metrics()
    assert "keyart_gateway_fallbacks_total" in defined_metrics()


async def test_promtool_accepts_the_gateway_metrics(settings) -> None:
    """The gateway application's own /metrics (its router from keyart.health)."""
    import httpx

    from gateway.app import create_app

    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert "keyart_gateway_decision_seconds_bucket" in response.text
    result = promtool("check", "metrics", stdin=response.content)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
