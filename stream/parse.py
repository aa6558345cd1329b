"""Parse and validate raw records; every failure becomes a dead letter with a reason."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from schemas.events import Event, EventRecord, describe_validation_error
from schemas.mapping import ColumnMapping
from stream.sources.base import SourceBatch

MAX_PAYLOAD_BYTES = 64 * 1024
FUTURE_TOLERANCE_MS = 24 * 3_600_000


@dataclass
class ParsedBatch:
    """Valid events, dead letters (reason, payload, source) and the batch's clock tick."""

    records: list[EventRecord] = field(default_factory=list)
    dead: list[tuple[str, str, str]] = field(default_factory=list)
    tick_ms: int | None = None
    n_in: int = 0
    part: str = ""
    n_parts: int = 1
    final: bool = False


def _payload_text(payload: Any) -> str:
    if isinstance(payload, str):
        return payload
    if isinstance(payload, bytes):
        return payload.decode("utf-8", errors="replace")
    return json.dumps(payload, default=str, ensure_ascii=False)


class EventParser:
    """Turns raw records into EventRecords under a column mapping.

    Events more than a day ahead of the wall clock are rejected: one absurd
    timestamp would otherwise move the event-time clock years ahead and expire
    every window.
    """

    def __init__(self, mapping: ColumnMapping, wall_clock: Callable[[], float] = time.time):
        self.mapping = mapping
        self.wall_clock = wall_clock
        # Text in the wire format (what `propstream produce` sends) validates straight from JSON.
        self._wire_format = mapping == ColumnMapping()

    def parse_one(self, source: str, payload: Any) -> EventRecord | str:
        """An EventRecord, or the reason it is not one."""
        if self._wire_format and isinstance(payload, bytes | str) and len(payload) <= MAX_PAYLOAD_BYTES // 4:
            try:
                return Event.model_validate_json(payload).to_record(source)
            except ValidationError:
                pass  # the general path below says why, in the same words for every input
        if isinstance(payload, bytes):
            if len(payload) > MAX_PAYLOAD_BYTES:
                return f"payload too large: {len(payload):,} bytes > {MAX_PAYLOAD_BYTES:,}"
            try:
                payload = payload.decode("utf-8")
            except UnicodeDecodeError as exc:
                return f"bad JSON: not UTF-8 ({exc})"
        if isinstance(payload, str):
            if len(payload) * 4 > MAX_PAYLOAD_BYTES and len(payload.encode()) > MAX_PAYLOAD_BYTES:
                return f"payload too large: {len(payload.encode()):,} bytes > {MAX_PAYLOAD_BYTES:,}"
            try:
                payload = json.loads(payload)
            except ValueError as exc:
                return f"bad JSON: {exc}"
        if not isinstance(payload, dict):
            return f"not an object: JSON value is {type(payload).__name__}"
        try:
            event = Event.model_validate(self.mapping.apply(payload))
        except ValidationError as exc:
            return describe_validation_error(exc)
        return event.to_record(source)

    def parse_batch(self, batch: SourceBatch) -> ParsedBatch:
        """Validate a batch; its tick is the later of the source's tick and its events' times."""
        out = ParsedBatch(n_in=len(batch.records), part=batch.part, n_parts=batch.n_parts, final=batch.final)
        limit = int(self.wall_clock() * 1000) + FUTURE_TOLERANCE_MS
        tick = batch.tick_ms
        for source, payload in batch.records:
            rec = self.parse_one(source, payload)
            if isinstance(rec, str):
                out.dead.append((rec, _payload_text(payload), source))
            elif rec.ts_ms > limit:
                out.dead.append(
                    (
                        "in the future: timestamp is more than 24 h ahead of the wall clock",
                        _payload_text(payload),
                        source,
                    )
                )
            else:
                out.records.append(rec)
                if tick is None or rec.ts_ms > tick:
                    tick = rec.ts_ms
        out.tick_ms = tick
        return out
