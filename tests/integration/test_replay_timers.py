"""``bench/replay.py --timers``: the seconds it prints per step come from a real run's steps.

The wrappers name methods of the stream by hand; when one is renamed or
becomes static (``ShardScoring.predict`` did), the run failed inside Bytewax
or a step silently stopped counting.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from bench.replay import add_timers
from tests.integration.conftest import make_settings, write_events
from tests.integration.helpers import run
from tests.synthetic import World


def test_every_step_of_a_scored_run_is_timed(
    trained_dir: Path, world: World, chdb_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    seconds: Counter = Counter()
    add_timers(seconds, patch=monkeypatch.setattr)
    settings = make_settings(trained_dir, world, chdb_dsn)
    stats = run(settings, [write_events(tmp_path / "events.jsonl", world.events)])
    assert stats.score_rows > 0
    steps = [
        "parse",
        "shard",
        "shard: refresh (incl. scoring)",
        "shard: scoring (own thread, overlaps refresh)",
        "insert scores",
        "insert customer_features",
    ]
    assert {step: seconds[step] > 0 for step in steps} == dict.fromkeys(steps, True)
    assert seconds["shard: refresh (incl. scoring)"] < seconds["shard"]  # nested
    # every scored row went through a counted predict (a group's row is predicted once per refresh)
    assert seconds["rows predicted (all groups)"] >= stats.score_rows
