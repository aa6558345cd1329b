"""Kafka topics of the deployment: events and dead letters (idempotent creation, checked before a run)."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from schemas.settings import KafkaSettings
from stream.sources.base import SourceError


class TopicError(SourceError):
    """A topic cannot be created or is missing, or the broker cannot be reached; the message says what to do."""


def require_topics(kafka: KafkaSettings, topics: list[str], timeout_s: float = 10.0) -> None:
    """Fail at start, in one line, when the broker is unreachable or a topic is missing."""
    admin = AdminClient(kafka.client_config())
    try:
        meta = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        msg = f"cannot reach Kafka at {kafka.bootstrap_servers}: {exc.args[0].str()}"
        raise TopicError(msg) from exc
    missing = [t for t in topics if t not in meta.topics or meta.topics[t].error is not None]
    if missing:
        msg = (
            f"kafka topic(s) {', '.join(missing)} do not exist at {kafka.bootstrap_servers} "
            "(`propstream init --kafka kafka://HOST:PORT/TOPIC` creates the topic and its dead-letter topic)"
        )
        raise TopicError(msg)


def create_topics(kafka: KafkaSettings, timeout_s: float = 30.0) -> dict[str, str]:
    """Create the events and dead-letter topics; existing topics are left alone."""
    admin = AdminClient(kafka.client_config())
    topics = [
        NewTopic(kafka.topic, kafka.partitions, kafka.replication_factor),
        NewTopic(kafka.dead_letters_topic, kafka.partitions, kafka.replication_factor),
    ]
    require_topics(kafka, [], timeout_s)  # an unreachable broker is one line, not a wait per topic
    result = {}
    for name, fut in admin.create_topics(topics, request_timeout=timeout_s).items():
        try:
            fut.result(timeout=timeout_s)
            result[name] = "created"
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                msg = f"cannot create kafka topic {name!r} at {kafka.bootstrap_servers}: {err.str()}"
                raise TopicError(msg) from exc
            result[name] = "exists"
    return result
