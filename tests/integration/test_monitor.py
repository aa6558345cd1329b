"""`propstream monitor` on a replay where one group's purchases vanish for three weeks.

A 200-day synthetic world; models trained on its clean log (test cutoff
2017-05-01, so they saw data up to 2017-05-31); the stream then replays the
log with every COFFEE purchase of 2017-06-02 .. 2017-06-23 removed. The
coffee group must raise drift events and its live calibration must degrade;
snacks (CHIPS, CANDY: no item in common with coffee) must raise none.

The served scores of these small models hardly move when only purchases
vanish (coffee's daily mean stays 0.65-0.68), so a second replay removes every
COFFEE event (views, carts and purchases: the shelf is empty) over the same
three weeks: then the score distribution itself drifts, if the models read
coffee's own recent activity enough. How much they do depends on the
booster's settings: on this world the trainer's default (depth 4, eta 0.1,
100 rounds) lowers coffee's mean served score by ~0.02 over the three weeks
after the empty ones, 300 rounds at eta 0.03 by ~0.04, and ADWIN at delta 1e-3
on ~57 coffee scores a day sees the second only (BENCHMARKS.md 1c). The
empty-shelf test therefore states the models it needs and checks that their
scores did move before asking the monitor to see it.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest

from models.registry import ModelRegistry
from propstream import app
from propstream.cli import main
from schemas.mapping import ColumnMapping
from schemas.settings import MonitorSettings
from tests.integration.conftest import PLAN, SMALL_DATA_PARAMS, make_settings, write_events
from tests.integration.helpers import query, run
from tests.synthetic import make_world

pytestmark = pytest.mark.integration

VANISH_FROM = datetime(2017, 6, 2, tzinfo=UTC)
VANISH_TO = VANISH_FROM + timedelta(days=21)
SINCE = "2017-04-01"  # after the first three months, in which every customer's windows fill up
# Two-week calibration windows: two of them close, labels included, before the purchases vanish.
MONITOR = MonitorSettings(since=SINCE, calibration_window_days=14)
# The models of the empty-shelf test: the synthetic world's small-data settings, 300 rounds at eta 0.03
# (the trainer's default until BENCHMARKS.md 1c), whose coffee scores follow its emptied windows.
SLOW_LEARNER = ({**SMALL_DATA_PARAMS, "eta": 0.03}, 300)
# The fall of coffee's mean served score (the three weeks after the empty ones against SINCE .. VANISH_FROM)
# that ADWIN at delta 1e-3 needs on ~57 scores a day with sd ~0.15: its cut bound for ~3,500 scores
# before against ~1,200 after is sqrt(2 m var ln(2 ln(n) / delta)) + 2/3 ln(...) m ~ 0.03.
SCORE_SHIFT = 0.03


def _replay_without(
    tmp_path_factory, chdb_dsn, name: str, vanish_types: set[str], params=SMALL_DATA_PARAMS, rounds=None
):
    """Settings of a store holding the stream's replay of the log without the vanished coffee events.

    The models are trained on the clean log with ``params`` and ``rounds`` (None: the trainer's default).
    """
    root = tmp_path_factory.mktemp(name)
    world = make_world(root / "world", n_events=10_000, days=200)
    with world.catalog_file.open() as f:
        coffee_items = {r["item_id"] for r in csv.DictReader(f) if r["product_category"] == "COFFEE"}
    settings = make_settings(root, world, chdb_dsn, progress_seconds=3600, batch_size=25).model_copy(
        update={"monitor": MONITOR}
    )
    records, _ = app.read_file_records([write_events(root / "clean.jsonl", world.events)], ColumnMapping())
    app.train(settings, records, plan=PLAN, progress=lambda _: None, params=params, rounds=rounds)

    def vanished(e: dict) -> bool:
        t = datetime.fromisoformat(e["timestamp"])
        return e["type"] in vanish_types and e["item_id"] in coffee_items and VANISH_FROM <= t < VANISH_TO

    drifted_log = [e for e in world.events if not vanished(e)]
    assert len(world.events) - len(drifted_log) > 50  # the drift is real: every coffee purchase of 3 weeks
    run(settings, [write_events(root / "drifted.jsonl", drifted_log)])
    return settings


@pytest.fixture(scope="module")
def drifted(tmp_path_factory, chdb_dsn):
    """Every coffee purchase of three weeks removed; models trained on the clean log."""
    return _replay_without(tmp_path_factory, chdb_dsn, "drift", {"purchase"})


@pytest.fixture(scope="module")
def emptied(tmp_path_factory, chdb_dsn):
    """Every coffee event (any type) of three weeks removed; models (``SLOW_LEARNER``) trained on the clean log."""
    params, rounds = SLOW_LEARNER
    return _replay_without(tmp_path_factory, chdb_dsn, "empty-shelf", {"view", "cart", "purchase"}, params, rounds)


def _mean_score(settings, group: str, start: datetime, end: datetime) -> float:
    """Mean served score of ``group`` with as-of in [start, end), from ``score_history``."""
    sql = (
        "SELECT avg(score) FROM {db}.score_history FINAL "
        f"WHERE group_id = '{group}' AND as_of >= '{start:%Y-%m-%d}' AND as_of < '{end:%Y-%m-%d}'"
    )
    return float(query(settings, sql)[0][0])


def _score_fall(settings, group: str) -> float:
    """How far ``group``'s mean served score fell: SINCE .. VANISH_FROM against the three weeks after VANISH_TO."""
    before = _mean_score(settings, group, datetime.fromisoformat(SINCE).replace(tzinfo=UTC), VANISH_FROM)
    return before - _mean_score(settings, group, VANISH_TO, VANISH_TO + timedelta(days=21))


def test_an_empty_shelf_raises_score_drift_for_its_group_only(emptied):
    # The premise: coffee's served scores fell as its windows emptied (30-day windows: it lags), snacks' did not.
    assert _score_fall(emptied, "coffee") >= SCORE_SHIFT
    assert abs(_score_fall(emptied, "snacks")) < SCORE_SHIFT / 3
    # ADWIN sees that fall at delta 1e-3, not at the default 1e-4.
    settings = emptied.model_copy(update={"monitor": MONITOR.model_copy(update={"delta": 1e-3})})
    report = app.monitor(settings, progress=lambda _: None)
    coffee = [e for e in report.drift if e.group_id == "coffee"]
    score = [e for e in coffee if e.signal == "score"]
    assert score, report.drift  # the served score distribution moved, not only the outcomes
    # Each score alarm lies in the empty weeks or in the horizon after them (the windows refill).
    for e in score:
        assert VANISH_FROM <= e.bucket <= VANISH_TO + timedelta(days=30), e
    assert [e for e in report.drift if e.group_id == "snacks"] == []


@pytest.fixture(scope="module")
def report(drifted):
    return app.monitor(drifted, progress=lambda _: None)


def test_vanished_purchases_raise_drift_for_their_group_and_none_for_an_unaffected_group(report):
    coffee = [e for e in report.drift if e.group_id == "coffee"]
    # The realised outcome drifts; the served scores of these small models barely move without purchases.
    assert "outcome" in {e.signal for e in coffee}, report.drift
    # Every coffee alarm points into the vanishing weeks: the scores during them, the outcomes of the
    # scores whose label horizon (30 days) reaches into them.
    for e in coffee:
        start = VANISH_FROM if e.signal == "score" else VANISH_FROM - timedelta(days=30)
        assert start <= e.bucket <= VANISH_TO, e
    assert [e for e in report.drift if e.group_id == "snacks"] == []


def _ece(report, group: str, before: datetime) -> tuple[float, float]:
    """Worst ECE of the windows whose labels all close before ``before``, and of those after."""
    windows = report.calibration[group]
    horizon = timedelta(days=30)
    clean = [w.ece for w in windows if datetime.fromtimestamp(w.end_ms / 1000, UTC) + horizon <= before]
    hit = [w.ece for w in windows if datetime.fromtimestamp(w.end_ms / 1000, UTC) > before]
    assert clean and hit
    return max(clean), max(hit)


def test_live_calibration_of_the_affected_group_degrades(report):
    clean, hit = _ece(report, "coffee", VANISH_FROM)
    assert hit > clean + 0.1, (clean, hit)
    snack_clean, snack_hit = _ece(report, "snacks", VANISH_FROM)
    assert snack_hit < snack_clean + 0.05, (snack_clean, snack_hit)


def test_monitor_writes_the_same_rows_again_and_the_command_prints_them(drifted, report):
    stored = query(drifted, "SELECT group_id, signal, bucket, value FROM {db}.drift_events FINAL ORDER BY ALL")
    mine = sorted((e.group_id, e.signal, e.bucket, e.value) for e in report.drift)
    assert [(g, s, b.replace(tzinfo=UTC) if b.tzinfo is None else b, v) for g, s, b, v in stored] == mine
    n_cal = query(drifted, "SELECT count() FROM {db}.live_calibration FINAL")[0][0]
    assert n_cal == sum(len(w.bins) for ws in report.calibration.values() for w in ws) > 0

    again = app.monitor(drifted, progress=lambda _: None)  # same store: same rows
    assert again.drift == report.drift
    assert [dataclasses.astuple(w) for w in again.calibration["coffee"]] == [
        dataclasses.astuple(w) for w in report.calibration["coffee"]
    ]
    assert query(drifted, "SELECT count() FROM {db}.live_calibration FINAL")[0][0] == n_cal


def test_monitor_command_prints_drift_as_json(drifted, report, monkeypatch, capsys):
    # chDB: one process per path, so the command runs in this process (its main()), on the same store.
    monkeypatch.setenv("PROPSTREAM_CLICKHOUSE__DATABASE", drifted.clickhouse.database)
    flags = ["--data-dir", str(drifted.data_dir), "--clickhouse", drifted.dsn, "--since", SINCE]
    flags += ["--groups", str(drifted.groups_file), "--catalog", str(drifted.catalog_file)]
    assert main(["monitor", "--group", "coffee", "--group", "snacks", "--json", *flags]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {e["group_id"] for e in doc["drift_events"]} == {"coffee"}
    assert {w["group_id"] for w in doc["live_calibration"]} == {"coffee", "snacks"}
    assert doc["retrained"] == []
    assert main(["monitor", "--group", "coffee", *flags]) == 0
    table = capsys.readouterr().out
    assert "drift events (" in table and "outcome" in table and "live calibration" in table


def test_drift_retrains_the_group_when_set_to(drifted, report):
    registry = ModelRegistry(drifted.models_dir)
    before = {g: registry.production_version(g) for g in ("coffee", "snacks")}
    settings = drifted.model_copy(update={"monitor": MONITOR.model_copy(update={"retrain_on_drift": True})})
    done = app.monitor(settings, ["coffee", "snacks"], progress=lambda _: None)
    assert done.retrained == ["coffee"]
    assert registry.versions("coffee")[-1] > before["coffee"]
    assert registry.production_version("snacks") == before["snacks"]
    assert len(registry.versions("snacks")) == 1
