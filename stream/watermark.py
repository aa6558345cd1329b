"""Event-time watermarks per source partition: lateness and clock skew judged on the partition's own events.

A partition's watermark is the latest event time it has delivered. Each event
is judged, in the partition's order, against the watermark before it:

- **late** when it is more than the allowed lateness behind it;
- **ahead** when it is more than ``max_ahead`` past it (a producer with a
  skewed clock, a timestamp in the wrong unit): the event is refused, so it
  cannot drag the watermark, and with it every window, into the future;
- otherwise accepted, and the watermark moves up to it.

The verdict depends only on the partition's own sequence of events: not on how
its messages were cut into batches, not on other partitions, not on the wall
clock or on how long the stream was down. A replay after any restart decides
every event exactly as an uninterrupted run did. The watermark is keyed state
of the dataflow (one key per source partition), so it is in the recovery
snapshots with the partition's offset.

The first event of a partition has nothing to be judged against and sets the
watermark (the contract still bounds it by the wall clock).

>>> rules = WatermarkRules(allowed_lateness_ms=10, max_ahead_ms=100)
>>> batch = ParsedBatch(records=[_rec(1_000), _rec(995), _rec(985), _rec(5_000), _rec(1_050)])
>>> rules.judge(None, batch)
1050
>>> [r.ts_ms for r in batch.records]
[1000, 995, 1050]
>>> [d.reason.split(":")[0] for d in batch.dead]
['late', 'ahead']
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.events import TYPE_NAMES, DeadLetter, EventRecord
from stream.parse import ParsedBatch

HOUR_MS = 3_600_000


@dataclass(frozen=True)
class WatermarkRules:
    """How far behind or ahead of its partition's watermark an event may be.

    ``type_names`` (the vocabulary's names) spells the type of a refused event's payload.
    """

    allowed_lateness_ms: int
    max_ahead_ms: int
    type_names: tuple[str, ...] = TYPE_NAMES

    def judge(self, watermark: int | None, batch: ParsedBatch) -> int | None:
        """Move late and ahead events of ``batch`` to its dead letters; return the partition's new watermark.

        ``batch.watermark`` is set to the returned value.
        """
        lateness, ahead, names = self.allowed_lateness_ms, self.max_ahead_ms, self.type_names
        kept: list[EventRecord] = []
        dead = batch.dead
        wm = watermark
        for rec in batch.records:
            ts = rec.ts_ms
            if wm is not None:
                if ts < wm - lateness:
                    dead.append(DeadLetter(self._late(wm - ts), rec.to_json(names), rec.source))
                    continue
                if ts > wm + ahead:
                    dead.append(DeadLetter(self._ahead(ts - wm), rec.to_json(names), rec.source))
                    continue
                if ts > wm:
                    wm = ts
            else:
                wm = ts
            kept.append(rec)
        batch.records = kept
        batch.watermark = wm
        return wm

    def _late(self, behind_ms: int) -> str:
        return (
            f"late: event time is {behind_ms / HOUR_MS:.1f} h before its partition's watermark; "
            f"allowed lateness is {self.allowed_lateness_ms / HOUR_MS:.1f} h"
        )

    def _ahead(self, ahead_ms: int) -> str:
        return (
            f"ahead: event time is {ahead_ms / HOUR_MS:.1f} h past its partition's watermark; "
            f"at most {self.max_ahead_ms / HOUR_MS:.1f} h allowed (stream.max_ahead_hours)"
        )


def _rec(ts_ms: int, user: str = "u") -> EventRecord:
    """A minimal record at ``ts_ms`` (for examples and tests)."""
    return EventRecord(user, "i", 0, ts_ms, f"e{ts_ms}", 1.0, 0, f"p:{ts_ms}")
