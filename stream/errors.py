"""Errors of the ``stream`` package: inputs, recovery, sinks and topics that cannot be used as configured."""

from __future__ import annotations

from schemas.errors import PropstreamError


class StreamError(PropstreamError):
    """The stream cannot run as configured (an input, the recovery store, ClickHouse or Kafka); one line says why."""
