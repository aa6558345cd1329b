"""Errors of the ``collector`` package."""

from __future__ import annotations

from schemas.errors import PropstreamError


class CollectorError(PropstreamError):
    """The collector cannot run as configured (the port, the topics); one line says why."""


class KafkaUnavailable(CollectorError):
    """Kafka did not acknowledge what a request wrote (queue full, delivery failed or timed out): answer 503."""
