"""Scheduled training: same data -> no new version, no rescore; one trainer at a time; `--every` and `--if-new-data`."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from models.registry import ModelRegistry
from propstream import app
from schemas.mapping import ColumnMapping
from tests.integration.conftest import make_settings, write_events
from tests.integration.helpers import query
from tests.synthetic import make_world

pytestmark = pytest.mark.integration

GROUPS = ["coffee", "snacks"]


def _records(tmp_path, events):
    records, rejected = app.read_file_records([write_events(tmp_path / "ev.jsonl", events)], ColumnMapping())
    assert rejected == 0
    return records


def _state(settings):
    registry = ModelRegistry(settings.models_dir)
    versions = {g: (registry.versions(g), registry.production_version(g)) for g in GROUPS}
    history = query(settings, "SELECT count() FROM {db}.score_history")[0][0]
    return versions, history


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """200 days: long enough for the default plan (train Feb, calibrate Apr 1 .. test May 1 or later)."""
    return make_world(tmp_path_factory.mktemp("world200"), n_events=8000, days=200)


@pytest.fixture
def trained(tmp_path, world, chdb_dsn):
    settings = make_settings(tmp_path, world, chdb_dsn)
    records = _records(tmp_path, world.events)
    app.train(settings, records, GROUPS, progress=lambda _: None)
    return settings, records


def test_training_again_on_the_same_data_registers_and_promotes_nothing(trained):
    settings, records = trained
    before = _state(settings)
    assert all(prod == 1 for _, prod in before[0].values())
    lines: list[str] = []
    app.train(settings, records, GROUPS, progress=lines.append)
    assert _state(settings) == before, "\n".join(lines)  # no new version, nothing rescored
    assert any("unchanged" in line for line in lines), lines


def test_a_daily_run_inside_the_same_training_window_changes_nothing(trained, world):
    settings, records = trained
    before = _state(settings)
    # Three more days of events: the plan still snaps to the same month starts, so the examples are the same.
    last = datetime.fromisoformat(world.events[-1]["timestamp"])
    later = [
        {**e, "event_id": f"late-{i}", "timestamp": (last + timedelta(days=1 + i % 3)).isoformat()}
        for i, e in enumerate(world.events[:200])
    ]
    more = records + [r for r in _records(settings.data_dir, later)]
    app.train(settings, more, GROUPS, progress=lambda _: None)
    assert _state(settings) == before


def test_if_new_data_trains_only_when_the_plan_moved_past_the_production_window(trained, world):
    settings, records = trained
    oldest, newest = (datetime.fromtimestamp(t / 1000, UTC) for t in (records[0].ts_ms, records[-1].ts_ms))
    assert app.training_due(settings, newest, oldest, GROUPS) == []  # the data the models were trained on
    assert app.training_due(settings, newest + timedelta(days=3), oldest, GROUPS) == []  # same month: same plan
    assert app.training_due(settings, newest + timedelta(days=31), oldest, GROUPS) == GROUPS  # a month matured
    assert app.training_due(settings, newest, oldest, [*GROUPS, "breakfast"]) == ["breakfast"]  # no model yet


def test_a_second_trainer_exits_with_one_line_while_the_first_holds_the_lock(tmp_path):
    from propstream.schedule import TrainerLock

    with TrainerLock(tmp_path):
        done = subprocess.run(
            [sys.executable, "-m", "propstream", "train", "--data-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"propstream train: another trainer holds {tmp_path / 'train.lock'}; this one exits"
    ]
    with TrainerLock(tmp_path):  # released: a later trainer takes it
        pass


def test_every_repeats_the_pass_until_stopped_and_reports_a_failed_pass(tmp_path):
    """An empty archive: each pass says so, and the loop goes on (as the compose trainer does)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "propstream", "train", "--every", "1s", "--data-dir", str(tmp_path)],
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        while sum("next training pass in 1s" in line for line in lines) < 2:
            line = proc.stderr.readline()
            assert line, lines  # the loop must not end by itself
            lines.append(line)
    finally:
        proc.kill()
        proc.wait()
    assert sum("no events to train on" in line for line in lines) >= 2, lines
