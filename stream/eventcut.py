"""Event-time batch cuts: a replay's batches end where event time crosses a span boundary.

A shard refreshes its customers once per batch, at the batch's watermark, and
``score_history`` keeps one row per refresh. Cut by size alone, a replay batch
may span twelve days of event time, so the score history holds "as of
2017-12-01" is up to twelve days old. This step re-cuts each source
partition's judged events so that a batch never spans more than one
``span_ms`` window of event time (``stream.max_batch_event_hours``): windows
are aligned to multiples of ``span_ms`` since the epoch (UTC midnights for a
day), and a batch ends when the partition's watermark first moves into a
later window.

Events of the open window are held back across source batches until the
watermark leaves it, or until the partition is idle or ended (then the open
window leaves at once, so nothing waits when the input is done; the partition's
watermark is kept to place its next events). The batches
that leave therefore depend only on the partition's own sequence of events,
not on how the source cut them: two replays with different ``batch_size``
refresh customers at the same event times and write the same
``score_history`` rows.

Only event time is cut: a live source (a wall-clock tick on its batches) is
passed through unchanged, its batches are already small and its clock is the
wall clock.

>>> from stream.watermark import _rec
>>> cut = EventTimeCut(span_ms=100)
>>> state, out = cut(None, ParsedBatch(records=[_rec(10), _rec(50), _rec(120)], part="p", watermark=120))
>>> [[r.ts_ms for r in b.records] for b in out], state.records[0].ts_ms
([[10, 50]], 120)
>>> out[0].watermark
50
>>> state, out = cut(state, ParsedBatch(records=[_rec(110), _rec(250)], part="p", watermark=250))
>>> [[r.ts_ms for r in b.records] for b in out]
[[120, 110]]
>>> state, out = cut(state, ParsedBatch(part="p", idle=True, watermark=250))
>>> len(state.records), [([r.ts_ms for r in b.records], b.idle, b.watermark) for b in out]
(0, [([250], True, 250)])
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.events import EventRecord
from stream.parse import ParsedBatch

DAY_MS = 86_400_000


@dataclass
class OpenSpan:
    """Events of a partition's open event-time window, held until the watermark leaves it (snapshotted)."""

    window: int  # watermark // span_ms
    watermark: int  # the partition's watermark after the last held event
    records: list[EventRecord] = field(default_factory=list)


@dataclass(frozen=True)
class EventTimeCut:
    """The cutting rule of one dataflow; called as a ``stateful_map`` keyed by source partition."""

    span_ms: int

    def __call__(self, held: OpenSpan | None, batch: ParsedBatch) -> tuple[OpenSpan | None, list[ParsedBatch]]:
        """Add ``batch``'s events to the partition's open window; return the new state and the batches cut."""
        if batch.tick_ms is not None:  # live: the wall clock drives the shards, nothing to cut
            return None, ([self._leave(held, batch, idle=False)] if held and held.records else []) + [batch]
        out: list[ParsedBatch] = []
        span = self.span_ms
        for rec in batch.records:
            wm = rec.ts_ms if held is None else max(held.watermark, rec.ts_ms)
            window = wm // span
            if held is None:
                held = OpenSpan(window, wm)
            elif window > held.window:
                if held.records:
                    out.append(self._leave(held, batch, idle=False))
                held = OpenSpan(window, wm)
            held.records.append(rec)
            held.watermark = wm
        if batch.idle:  # ended or quiet: the open window leaves now, marked idle; its watermark stays
            out.append(
                ParsedBatch(
                    part=batch.part, n_parts=batch.n_parts, idle=True, watermark=batch.watermark, index=batch.index
                )
            )
            if held is not None:
                out[-1].records, held = held.records, OpenSpan(held.window, held.watermark)
        return held, out

    @staticmethod
    def _leave(held: OpenSpan, batch: ParsedBatch, idle: bool) -> ParsedBatch:
        return ParsedBatch(
            records=held.records,
            part=batch.part,
            n_parts=batch.n_parts,
            idle=idle,
            watermark=held.watermark,
            index=batch.index,
        )
