"""Partition watermarks: every event's verdict depends on its partition's own order, never on batch cuts."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from stream.parse import ParsedBatch
from stream.watermark import WatermarkRules, _rec

HOUR = 3_600_000
RULES = WatermarkRules(allowed_lateness_ms=24 * HOUR, max_ahead_ms=30 * 24 * HOUR)


def judge_in_batches(times: list[int], cuts: list[int]) -> tuple[list[str], list[str], int | None]:
    """Judge ``times`` cut into batches at ``cuts``; the accepted sources, the dead reasons, the watermark."""
    records = [_rec(t) for t in times]
    bounds = [0, *sorted(set(cuts)), len(records)]
    wm: int | None = None
    kept: list[str] = []
    dead: list[str] = []
    for a, b in pairwise(bounds):
        batch = ParsedBatch(records=records[a:b])
        wm = RULES.judge(wm, batch)
        assert batch.watermark == wm
        kept += [r.source for r in batch.records]
        dead += [reason for reason, _, _ in batch.dead]
    return kept, dead, wm


steps = st.integers(min_value=-40 * HOUR, max_value=2 * HOUR) | st.integers(min_value=0, max_value=40 * 24 * HOUR)


@settings(max_examples=300, deadline=None)
@given(st.lists(steps, min_size=1, max_size=60), st.data())
def test_verdicts_do_not_depend_on_how_a_partition_is_cut_into_batches(deltas, data):
    times = [1_500_000_000_000]
    for d in deltas:
        times.append(times[-1] + d)
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(times)), max_size=10))
    assert judge_in_batches(times, cuts) == judge_in_batches(times, [])
    assert judge_in_batches(times, cuts) == judge_in_batches(times, list(range(len(times))))  # one event a batch


def test_a_skewed_timestamp_is_refused_and_does_not_move_the_watermark():
    day = 24 * HOUR
    t0 = 1_500_000_000_000
    skewed = t0 + 9 * 365 * day  # a producer stamping today's date into a 2017 replay
    kept, dead, wm = judge_in_batches([t0, t0 + HOUR, skewed, t0 + 2 * HOUR, t0 + 40 * day], [])
    assert kept == [f"p:{t}" for t in (t0, t0 + HOUR, t0 + 2 * HOUR)]
    assert [d.split(":")[0] for d in dead] == ["ahead", "ahead"]  # a gap of 40 days is past the 30-day bound too
    assert wm == t0 + 2 * HOUR


def test_lateness_is_measured_from_the_partition_watermark_not_from_the_arrival_time():
    t0 = 1_500_000_000_000
    kept, dead, _ = judge_in_batches([t0 + 48 * HOUR, t0 + 30 * HOUR, t0, t0 + 25 * HOUR], [])
    assert kept == [f"p:{t0 + 48 * HOUR}", f"p:{t0 + 30 * HOUR}", f"p:{t0 + 25 * HOUR}"]
    assert dead == ["late: event time is 48.0 h before its partition's watermark; allowed lateness is 24.0 h"]
