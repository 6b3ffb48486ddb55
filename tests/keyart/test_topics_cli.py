"""`keyart topics` against the real broker."""

from __future__ import annotations

import uuid

from confluent_kafka.admin import AdminClient
from typer.testing import CliRunner

from keyart.cli import app
from keyart.stack import StackInfo, free_port
from schemas.topics import topic_specs


def test_topics_creates_each_topic_once(stack: StackInfo, tmp_path) -> None:
    prefix = "tc" + uuid.uuid4().hex[:8]
    env = {
        "KEYART_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "KEYART_TOPIC_PREFIX": prefix,
        "KEYART_TOPIC_PARTITIONS": "3",
        "KEYART_STATE_DIR": str(tmp_path),
    }
    first = CliRunner().invoke(app, ["topics"], env=env)
    assert first.exit_code == 0, first.output
    wanted = topic_specs(prefix, 3)
    meta = AdminClient({"bootstrap.servers": stack.kafka_bootstrap}).list_topics(
        timeout=10
    )
    for name, (partitions, _) in wanted.items():
        assert len(meta.topics[name].partitions) == partitions
    lines = first.stdout.splitlines()
    assert sum(line.endswith(" created") for line in lines) == len(wanted)
    again = CliRunner().invoke(app, ["topics"], env=env)
    assert again.exit_code == 0, again.output
    assert sum(line.endswith(" exists") for line in again.stdout.splitlines()) == 7


def test_topics_names_the_setting_when_no_broker_answers(tmp_path) -> None:
    env = {
        "KEYART_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port(0)}",
        "KEYART_STATE_DIR": str(tmp_path),
    }
    result = CliRunner().invoke(app, ["topics", "--wait", "0"], env=env)
    assert result.exit_code == 1
    assert "KEYART_KAFKA_BOOTSTRAP" in result.output
