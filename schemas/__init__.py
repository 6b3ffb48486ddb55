"""Avro event contracts of keyart and the codec every process uses."""

from schemas.codec import SCHEMA_NAMES, Codec, DecodeError, get_codec
from schemas.topics import TOPICS, TopicSpec, topic_specs

__all__ = [
    "SCHEMA_NAMES",
    "TOPICS",
    "Codec",
    "DecodeError",
    "TopicSpec",
    "get_codec",
    "topic_specs",
]
