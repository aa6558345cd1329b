"""Kafka topics of the deployment: events and dead letters (idempotent creation)."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from schemas.settings import KafkaSettings


def create_topics(kafka: KafkaSettings, timeout_s: float = 30.0) -> dict[str, str]:
    """Create the events and dead-letter topics; existing topics are left alone."""
    admin = AdminClient(kafka.client_config())
    topics = [
        NewTopic(kafka.topic, kafka.partitions, kafka.replication_factor),
        NewTopic(kafka.dead_letter_topic, kafka.partitions, kafka.replication_factor),
    ]
    result = {}
    for name, fut in admin.create_topics(topics, request_timeout=timeout_s).items():
        try:
            fut.result(timeout=timeout_s)
            result[name] = "created"
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                msg = f"cannot create kafka topic {name!r} at {kafka.bootstrap_servers}: {err.str()}"
                raise RuntimeError(msg) from exc
            result[name] = "exists"
    return result
