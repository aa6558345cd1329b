"""Parse and validate raw records; every failure becomes a dead letter with a reason."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from schemas.events import DEFAULT_VOCABULARY, DeadLetter, EventRecord, Vocabulary, describe_validation_error
from schemas.mapping import ColumnMapping
from stream.columns import fast_records, row_dicts
from stream.fastparse import WireFastPath
from stream.sources.base import SourceBatch

log = logging.getLogger(__name__)
MAX_PAYLOAD_BYTES = 64 * 1024
FUTURE_TOLERANCE_MS = 24 * 3_600_000
FUTURE_REASON = "in the future: timestamp is more than 24 h ahead of the wall clock"


@dataclass
class ParsedBatch:
    """Valid events, dead letters and where the batch's partition stands.

    ``tick_ms`` is the wall clock of a live source (None in event time);
    ``watermark`` the partition's event-time watermark after this batch, set by
    ``stream.watermark``; ``idle`` says that the partition has nothing more
    to deliver for now (ended, or read to its end and quiet for a while).
    """

    records: list[EventRecord] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    tick_ms: int | None = None
    n_in: int = 0
    dropped: int = 0  # of a type the mapping drops on purpose (neither applied nor dead letters)
    part: str = ""
    n_parts: int = 1
    idle: bool = False
    watermark: int | None = None
    index: int | None = None  # the partition's position among its source's (SourceBatch.index)


def payload_text(payload: Any) -> str:
    """The raw input as text for the dead-letter table; never raises."""
    if isinstance(payload, str):
        return payload
    if isinstance(payload, bytes):
        return payload.decode("utf-8", errors="replace")
    try:
        return json.dumps(payload, default=str, ensure_ascii=False)
    except Exception:  # a row too deep or too odd to encode: keep what repr can show
        try:
            return repr(payload)[:MAX_PAYLOAD_BYTES]
        except Exception:
            return f"<unprintable {type(payload).__name__}>"


class EventParser:
    """Turns raw records into EventRecords under a column mapping and an event-type vocabulary.

    ``types`` is the configured vocabulary (``events.types``; the spec's
    ``FeatureSpec.vocabulary``): a type outside it is a dead letter listing
    the types, and the mapping's ``type_values`` must map into it
    (``MappingTypesError`` here, before anything is read).

    Events more than a day ahead of the wall clock are rejected: one absurd
    timestamp would otherwise move the event-time clock years ahead and expire
    every window.

    Under the default mapping, text and bytes first try the wire-format fast
    path (``stream.fastparse``), which accepts only what it can prove the
    model accepts and builds the same record; ``fast=False`` turns it off
    (the tests compare both).
    """

    def __init__(
        self,
        mapping: ColumnMapping,
        wall_clock: Callable[[], float] = time.time,
        *,
        types: Vocabulary | tuple[str, ...] = DEFAULT_VOCABULARY,
        fast: bool = True,
    ):
        self.types = Vocabulary.of(types)
        mapping.check_types(self.types.names)
        self.mapping = mapping
        self.wall_clock = wall_clock
        self._event = self.types.model  # the contract over this vocabulary, resolved once
        # Text in the wire format (what `propstream produce` sends) validates straight from JSON.
        self._wire_format = mapping == ColumnMapping()
        self._fast = WireFastPath(self.types).record if fast and self._wire_format else None

    def parse_one(self, source: str, payload: Any) -> EventRecord | str | None:
        """An EventRecord, or the reason it is not one, or None for a type the mapping drops; never raises.

        The known failures get their own words; anything else (a parser's
        RecursionError on deep nesting, an OverflowError from a huge number, a
        bug) is a dead letter too, named by its exception, so that no input can
        stop the flow: a message that crashed it would crash it again on every
        restart.
        """
        try:
            return self._parse_one(source, payload)
        except Exception as exc:
            return f"unparseable: {type(exc).__name__}: {str(exc)[:200]}"

    def future_limit_ms(self) -> int:
        """Event times past this (epoch ms, 24 h ahead of the wall clock) are refused."""
        return int(self.wall_clock() * 1000) + FUTURE_TOLERANCE_MS

    def check(self, source: str, payload: Any, limit_ms: int | None = None) -> EventRecord | str | None:
        """:meth:`parse_one` plus the wall-clock bound: what the stream would apply, why not, or None (dropped).

        Producers (``propstream produce``, the HTTP collector) call it, so that
        they refuse exactly what the stream would dead-letter at parsing.
        ``limit_ms`` is :meth:`future_limit_ms`, taken once for a batch.
        """
        rec = self.parse_one(source, payload)
        if rec is None or isinstance(rec, str):
            return rec
        if rec.ts_ms > (self.future_limit_ms() if limit_ms is None else limit_ms):
            return FUTURE_REASON
        return rec

    def _fast_record(self, source: str, payload: Any) -> EventRecord | None:
        """The record of a wire-format payload the fast path accepts; None: the model path decides; never raises."""
        if self._fast is None or not isinstance(payload, bytes | str) or len(payload) > MAX_PAYLOAD_BYTES // 4:
            return None
        try:
            return self._fast(payload, source)
        except Exception:  # a bug there must not stop the flow: the model path decides
            log.debug("wire fast path failed on %s", source, exc_info=True)
            return None

    def _parse_one(self, source: str, payload: Any) -> EventRecord | str | None:
        if self._wire_format and isinstance(payload, bytes | str) and len(payload) <= MAX_PAYLOAD_BYTES // 4:
            if (rec := self._fast_record(source, payload)) is not None:
                return rec
            try:
                return self._event.model_validate_json(payload).to_record(source)
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
        if self.mapping.drops(payload):
            return None
        try:
            event = self._event.model_validate(self.mapping.apply(payload))
        except ValidationError as exc:
            return describe_validation_error(exc)
        return event.to_record(source)

    def parse_batch(self, batch: SourceBatch) -> ParsedBatch:
        """Validate a batch.

        An Arrow batch (Parquet) takes the columnar fast path (``stream.columns``);
        the rows it cannot prove valid come back here, one at a time.
        """
        out = ParsedBatch(
            n_in=len(batch),
            tick_ms=batch.tick_ms,
            part=batch.part,
            n_parts=batch.n_parts,
            idle=batch.idle or batch.final,
            index=batch.index,
        )
        limit = self.future_limit_ms()
        records, dead = out.records, out.dead

        def take(source: str, payload: Any, rec: EventRecord | str | None) -> None:
            if rec is None:
                out.dropped += 1
            elif isinstance(rec, str):
                dead.append(DeadLetter(rec, payload_text(payload), source))
            elif rec.ts_ms > limit:
                dead.append(DeadLetter(FUTURE_REASON, payload_text(payload), source))
            else:
                records.append(rec)

        if batch.columns is None:
            for source, payload in batch.records:
                rec = self._fast_record(source, payload)  # most live traffic; the rest (None) is checked in full
                if rec is not None and rec.ts_ms <= limit:
                    records.append(rec)
                else:
                    take(source, payload, rec if rec is not None else self.check(source, payload, limit))
        else:
            table = batch.columns
            sources = [f"{batch.part}:row{batch.first_row + i}" for i in range(table.num_rows)]
            try:
                fasts = fast_records(table, self.mapping, sources, self.types.names)
            except Exception:  # a column the fast path cannot read: every row takes the row path
                log.warning("columnar fast path failed on %s; parsing row by row", batch.part, exc_info=True)
                fasts = [None] * table.num_rows
            for i, fast in enumerate(fasts):
                if fast is not None and fast.ts_ms <= limit:
                    records.append(fast)
                    continue
                try:
                    payload = row_dicts(table.slice(i, 1))[0]
                except Exception as exc:  # a value Arrow cannot turn into Python
                    dead.append(DeadLetter(f"unreadable row: {type(exc).__name__}: {str(exc)[:200]}", "", sources[i]))
                    continue
                take(sources[i], payload, fast if fast is not None else self.parse_one(sources[i], payload))
        return out
