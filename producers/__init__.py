"""Producers of keyart events: the Avro producer every process uses, the
collector's Python client, the traffic simulator and the logged-data replayer."""

from producers.events import KIND_TO_TOPIC, EventProducer

__all__ = ["KIND_TO_TOPIC", "EventProducer"]
