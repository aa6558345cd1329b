"""From an HTTP request to Kafka messages and per-event answers (pure: no I/O, no clock of its own).

A request is a JSON body (one event object, or an array of them) or a
pixel's query string. Each event is validated by the stream's own parser
(``EventParser.check``: the event contract and its 24-hour bound on the wall
clock), so the collector refuses exactly what the stream would dead-letter
at parsing. Before that, an event without a timestamp gets the receive time;
an event without an id gets the contract's content hash from the parser
(``content_id_of``: same content, same id, so a client's retry is one event).
Valid events become canonical JSON keyed by user_id (``stream.wire``);
everything refused becomes a dead letter with its reason.

>>> from schemas.mapping import ColumnMapping
>>> intake = Intake(EventParser(ColumnMapping()), max_events=10)
>>> body = b'[{"user_id": "u1", "item_id": "i1", "type": "view", "timestamp": 1700000000000, "event_id": "e1"},'
>>> body += b' {"user_id": "u1", "item_id": "i1", "type": "levitate"}]'
>>> got = intake.body(body, "r1", now_ms=1700000000500)
>>> got.status, [r.event_id or r.reason for r in got.results]
(207, ['e1', "invalid event: type: Input should be 'view', 'cart' or 'purchase'"])
>>> got.dead[0].source
'collector/events/r1#1'
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas.events import DeadLetter, EventRecord
from stream.parse import EventParser, payload_text

SOURCE = "collector"  # dead letters' source: collector/<endpoint>/<request id>[#<index in the request>]


@dataclass(frozen=True)
class EventResult:
    """What became of one event of a request: accepted with its id, or rejected with a reason."""

    index: int
    event_id: str | None = None
    reason: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The per-event entry of a response body."""
        if self.reason is None:
            return {"index": self.index, "status": "accepted", "event_id": self.event_id}
        return {"index": self.index, "status": "rejected", "reason": self.reason}


@dataclass
class Intake:
    """Turns requests into :class:`Outcome` s; built once per worker, shared by every request."""

    parser: EventParser
    max_events: int

    def body(self, raw: bytes, request_id: str, now_ms: int) -> Outcome:
        """A POST body: one event object or a JSON array of at most ``max_events`` of them."""
        try:
            data = json.loads(raw)
        except Exception as exc:  # bad UTF-8, bad JSON, nesting too deep, a number too long: all one answer
            return Outcome.refused(400, f"bad JSON: {type(exc).__name__}: {str(exc)[:200]}", raw, request_id)
        if isinstance(data, dict):
            return self._events([data], f"{SOURCE}/events/{request_id}", now_ms)
        if not isinstance(data, list):
            return Outcome.refused(400, f"not an event: JSON value is {type(data).__name__}", raw, request_id)
        if not data:
            return Outcome.refused(400, "empty batch: the array holds no events", raw, request_id)
        if len(data) > self.max_events:
            reason = f"batch too large: {len(data):,} events > {self.max_events:,} (collector.max_events)"
            return Outcome.refused(413, reason, raw, request_id)
        return self._events(data, f"{SOURCE}/events/{request_id}", now_ms)

    def query(self, params: Mapping[str, str], request_id: str, now_ms: int) -> Outcome:
        """A pixel's query string (contract field names); digits in ``timestamp`` are epoch milliseconds."""
        event: dict[str, Any] = dict(params)
        ts = event.get("timestamp")
        if isinstance(ts, str) and ts.isascii() and ts.isdigit():
            event["timestamp"] = int(ts)  # as in a JSON body (a numeric string would be read as seconds or ms)
        return self._events([event], f"{SOURCE}/pixel/{request_id}", now_ms)

    def _events(self, items: list[Any], request: str, now_ms: int) -> Outcome:
        out = Outcome(200)
        limit = self.parser.future_limit_ms()
        for i, item in enumerate(items):
            source = f"{request}#{i}"
            if isinstance(item, dict):
                raw: Any = item
                if item.get("timestamp") in (None, ""):
                    item = {**item, "timestamp": now_ms}  # the receive time
            else:  # as JSON text, which the parser reads and refuses in its own words ("not an object")
                raw = item = json.dumps(item)
            rec = self.parser.check(source, item, limit)
            if rec is None:  # a type its mapping drops on purpose (the collector's own mapping drops none)
                out.results.append(EventResult(i, reason="dropped by the mapping"))
            elif isinstance(rec, str):
                out.dead.append(DeadLetter(rec, payload_text(raw), source))  # as the client sent it
                out.results.append(EventResult(i, reason=rec))
            else:
                out.events.append(rec)
                out.results.append(EventResult(i, event_id=rec.event_id))
        if out.dead:
            out.status = 207 if out.events else 400
        return out


@dataclass
class Outcome:
    """What a request writes to Kafka and how it is answered once Kafka has acknowledged all of it.

    ``status``: 200 every event accepted; 207 some accepted, some rejected;
    400 none accepted (each rejected, or the body is not JSON, not an event
    or an array of events, or empty); 413 the body or the array is too large.
    ``error`` is the reason of a request refused as a whole (one dead letter).
    """

    status: int
    events: list[EventRecord] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    results: list[EventResult] = field(default_factory=list)
    error: str | None = None

    @classmethod
    def refused(cls, status: int, reason: str, raw: bytes, request_id: str) -> Outcome:
        """A request refused as a whole: one dead letter holding its body."""
        return cls(status, dead=[DeadLetter(reason, payload_text(raw), f"{SOURCE}/events/{request_id}")], error=reason)

    def as_json(self) -> dict[str, Any]:
        """The response body."""
        body: dict[str, Any] = {
            "accepted": len(self.events),
            "rejected": sum(r.reason is not None for r in self.results),
            "results": [r.as_json() for r in self.results],
        }
        if self.error is not None:
            body["error"] = self.error
        return body
