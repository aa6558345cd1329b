"""What propstream puts on Kafka: events keyed by user_id, and dead letters with their reason.

Every producer (``propstream produce``, the HTTP collector, the stream's
dead-letter sink) writes these two shapes, so consumers read one format.

>>> from schemas.events import TYPE_NAMES, DeadLetter, EventRecord
>>> key, value = event_message(EventRecord("u1", "i9", 2, 1_488_362_400_000, "e1", 1.0, 250, "file:2"), TYPE_NAMES)
>>> key, sorted(json.loads(value).items())[:4]
(b'u1', [('event_id', 'e1'), ('item_id', 'i9'), ('quantity', 1.0), ('timestamp', 1488362400000)])
>>> key, value = dead_letter_message(DeadLetter("bad JSON: ...", "{x", "collector/ab12"), "2026-01-01T00:00:00+00:00")
>>> key, value[:40]
(b'collector/ab12', b'{"reason": "bad JSON: ...", "payload": "')
"""

from __future__ import annotations

import json

from schemas.events import DeadLetter, EventRecord

MAX_TOPIC_PAYLOAD = 64 * 1024


def event_message(rec: EventRecord, type_names: tuple[str, ...]) -> tuple[bytes, bytes]:
    """(key, value) of an event: the user_id (a customer's events stay in order on one partition), canonical JSON.

    ``type_names`` is the vocabulary's names (the parser's ``types.names``): the record holds a type index.
    """
    return rec.user_id.encode(), rec.to_json(type_names).encode()


def dead_letter_message(dead: DeadLetter, received_at: str) -> tuple[bytes, bytes]:
    """(key, value) of a dead letter: keyed by its source; a payload over 64 KiB is cut (``payload_truncated``).

    The value is ASCII JSON, so that no input (lone surrogates included) can fail to encode.
    """
    cut = len(dead.payload) > MAX_TOPIC_PAYLOAD
    value = json.dumps(
        {
            "reason": dead.reason,
            "payload": dead.payload[:MAX_TOPIC_PAYLOAD],
            "payload_truncated": cut,
            "source": dead.source,
            "received_at": received_at,
        }
    )
    return dead.source.encode(errors="replace"), value.encode()
