"""Run counters: the progress line shows event-to-visible lag only where it means freshness."""

from __future__ import annotations

import time

from stream.sinks.base import RunStats


def _stats(live: bool, age_ms: int) -> RunStats:
    stats = RunStats(live=live)
    stats.visible_lag.add([int(time.time() * 1000) - age_ms], int(time.time() * 1000))
    return stats


def test_a_live_stream_reports_its_lag_and_a_replay_does_not():
    live = _stats(True, 1_500).line()
    assert "event to visible p99" in live
    p99 = float(live.split("event to visible p99 ")[1].split(" s")[0].replace(",", ""))
    assert 1.5 <= p99 <= 1.5 * 1.2  # the histogram's upper edge, ~12 % resolution
    # a replay of 2017 data: the "lag" is the data's age, left out of the line (run --json still has it)
    replay = _stats(False, 9 * 365 * 86_400_000)
    assert "event to visible" not in replay.line()
    assert replay.visible_lag.summary()["p99_s"] is not None
