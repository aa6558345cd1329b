"""bench/replay_step.py's batches: the first events of a file, cut into UTC days as the dataflow cuts them."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.replay_step import day_batches
from schemas.events import EventRecord
from stream.eventcut import DAY_MS

T = 1_500_000_000_000 // DAY_MS * DAY_MS  # a UTC midnight


@settings(deadline=None)
@given(st.lists(st.integers(0, 5 * DAY_MS), max_size=60), st.integers(0, 70))
def test_the_first_events_leave_once_each_in_order_one_utc_day_per_batch_the_last_marked_idle(offsets, limit):
    records = [EventRecord(f"u{i % 3}", "i", 2, T + o, f"e{i}", 1.0, 100, "s") for i, o in enumerate(sorted(offsets))]
    batches = day_batches(records, limit)
    assert [r for b in batches for r in b.records] == records[:limit]  # nothing lost, nothing twice, in order
    for b in batches:
        assert len({r.ts_ms // DAY_MS for r in b.records}) <= 1  # file order is time order here: one day each
        assert b.records == [] or b.watermark == max(r.ts_ms for r in b.records)
    assert batches and batches[-1].idle  # the end of the file: the open day leaves
    assert not any(b.idle for b in batches[:-1])
