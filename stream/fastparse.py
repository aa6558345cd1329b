"""The wire-format fast path: decode an event sent by ``propstream produce`` without the pydantic model.

Events on Kafka are almost all in the wire format of ``EventRecord.to_json``
(what ``propstream produce``, the HTTP collector and ``bench/suite.py``
send): an object of the contract's field names, an integer epoch-ms
timestamp, plain-text ids, finite numbers. For those, the checks of the event
contract (``schemas.events.Event``) reduce to a typed decode (msgspec, into a
``Struct`` whose timestamp is an ``int``) and a few comparisons, and the
``EventRecord`` can be built straight from the decoded fields.

The rule this module keeps: a payload it accepts yields exactly the record
the model path would give; when in doubt it accepts nothing (``None``), and
the model path decides the payload and gives the reason if it rejects it.
``stream/columns.py`` keeps the same rule for Parquet; ``tests/stream/test_parse_fast.py``
checks it on generated payloads against a parser with the fast path off.

Why each input the fast path accepts is decided the same way:

- JSON: msgspec decodes strict RFC 8259 only (no NaN literals, no BOM, no
  lone surrogate escapes, valid UTF-8; a duplicate key keeps its last value,
  like the model path). Unknown fields are refused, so nothing nested is ever
  read (no depth limits to compare).
- ids (``user_id``, ``item_id``, ``event_id``): strings only, 1..max
  characters, whose first and last characters are plain
  (``schemas.events.PLAIN_CHARACTERS``), so the model's whitespace stripping (Unicode
  White_Space) would change nothing. Integer ids, empty or padded strings take
  the model path.
- ``type``: exactly a name of the vocabulary.
- ``timestamp``: an integer in [2000-01-01, 2100-01-01) as epoch ms. The model
  reads it as ``datetime.fromtimestamp(ms / 1e3)``, rounded half-even to the
  microsecond; below 2**32 s the float's error is under 2**-22 s < 0.5 µs, so
  that datetime is exactly the millisecond and ``ts_ms`` gives the integer
  back. Floats, exponents and ISO strings take the model path.
- ``quantity``, ``value``: JSON numbers (msgspec refuses bools, nulls and
  non-finite numbers), in the contract's bounds. An integer becomes the same
  float as the model's (``1`` -> ``1.0``), ``-0.0`` stays ``-0.0`` and ``-0``
  is ``0.0`` in both, so a content id (``repr`` of each) and
  ``round(value * 100)`` are the same.
- ``event_id`` absent or null: the content id, as ``Event.content_id``.

>>> fast = WireFastPath(DEFAULT_VOCABULARY)
>>> rec = fast.record(b'{"user_id":"u1","item_id":"i9","type":"purchase","timestamp":1488362400000,'
...                   b'"event_id":"e1","quantity":1,"value":2.5}', "t/0/7")
>>> rec.type_index, rec.ts_ms, rec.quantity, rec.value_cents
(2, 1488362400000, 1.0, 250)
>>> fast.record(b'{"user_id":" u1","item_id":"i9","type":"purchase","timestamp":1488362400000}', "t/0/8") is None
True
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from schemas.events import (
    DEFAULT_VOCABULARY,
    MAX_EVENT_ID_LENGTH,
    MAX_ID_LENGTH,
    MAX_QUANTITY,
    MAX_TIMESTAMP_MS,
    MAX_VALUE,
    MIN_TIMESTAMP_MS,
    PLAIN_CHARACTERS,
    EventRecord,
    Vocabulary,
    content_id_of,
)

assert MAX_TIMESTAMP_MS < 2**32 * 1000, "the exactness argument for timestamps needs times below 2**32 s"
_PLAIN = frozenset(PLAIN_CHARACTERS)  # text that starts and ends with one needs no stripping


# Bounds checked by msgspec as it decodes (lengths in characters, as pydantic counts them).
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
EventId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_EVENT_ID_LENGTH)]
EpochMs = Annotated[int, msgspec.Meta(ge=MIN_TIMESTAMP_MS, lt=MAX_TIMESTAMP_MS)]
Quantity = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_QUANTITY)]
Value = Annotated[float, msgspec.Meta(ge=-MAX_VALUE, le=MAX_VALUE)]


class _Wire(msgspec.Struct, forbid_unknown_fields=True):
    """The wire format as msgspec decodes it (field names and defaults as ``schemas.events.Event``)."""

    user_id: Id
    item_id: Id
    type: str
    timestamp: EpochMs
    event_id: EventId | None = None
    quantity: Quantity = 1.0
    value: Value = 0.0


class WireFastPath:
    """Decodes wire-format payloads (bytes or text) to EventRecords when certainly valid; None otherwise."""

    def __init__(self, types: Vocabulary = DEFAULT_VOCABULARY):
        self._types = types
        self._decode = msgspec.json.Decoder(_Wire).decode
        self._index = types.index

    def __reduce__(self) -> tuple[type[WireFastPath], tuple[Vocabulary]]:
        """Pickled as its vocabulary (a msgspec decoder is not picklable; an EventParser pickles as before)."""
        return WireFastPath, (self._types,)

    def record(self, payload: bytes | str, source: str) -> EventRecord | None:
        """The EventRecord the model path would give, or None: the model path must decide."""
        try:
            e = self._decode(payload)
        except (msgspec.DecodeError, UnicodeError):  # msgspec.ValidationError is a DecodeError
            return None
        user, item, eid, t = e.user_id, e.item_id, e.event_id, self._index.get(e.type)
        if (
            t is None
            or user[0] not in _PLAIN  # ids have 1.. characters (the Struct's bounds)
            or user[-1] not in _PLAIN
            or item[0] not in _PLAIN
            or item[-1] not in _PLAIN
        ):
            return None
        ts, q, v = e.timestamp, e.quantity, e.value
        if eid is None:
            eid = content_id_of(user, item, e.type, ts, q, v)
        elif eid[0] not in _PLAIN or eid[-1] not in _PLAIN:
            return None
        return EventRecord._make((user, item, t, ts, eid, q, round(v * 100), source))  # _make: no Python __new__
