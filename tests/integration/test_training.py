"""Training: what a model card says (checked against labels counted by brute force), and the promotion gate."""

from __future__ import annotations

import shutil
from datetime import datetime

import numpy as np
import pytest

from models.artifact import ModelArtifact
from models.registry import ModelRegistry
from offline_train.dataset import build_examples, replay_features, to_ms
from offline_train.train import slice_metrics
from propstream import app
from schemas.cards import Stage
from tests.integration.conftest import PLAN, SMALL_DATA_PARAMS, _mapping, make_settings, write_events
from tests.integration.helpers import production_predict, query, state_config

pytestmark = pytest.mark.integration
DAY_MS = 86_400_000


def _label_rate(world, catalog, group_index: int, cutoff: datetime) -> tuple[float, int]:
    """Share of households seen by ``cutoff`` that buy in the group within the next 30 days."""
    t = to_ms(cutoff)
    seen, buyers = set(), set()
    for e in world.events:
        ts = to_ms(datetime.fromisoformat(e["timestamp"]))
        if ts <= t:
            seen.add(e["user_id"])
        elif ts <= t + 30 * DAY_MS and e["type"] == "purchase" and group_index in catalog.groups_of(e["item_id"]):
            buyers.add(e["user_id"])
    return len(buyers & seen) / len(seen), len(seen)


def test_card_metrics_describe_the_test_slice_and_the_calibration_slice(world, trained_dir, chdb_dsn, tmp_path):
    settings = make_settings(trained_dir, world, chdb_dsn)
    catalog = app.load_catalog(settings)
    registry = ModelRegistry(settings.models_dir)
    records, _ = app.read_file_records([write_events(tmp_path / "ev.jsonl", world.events)], _mapping())
    test_ms = to_ms(PLAN.test)
    rows = replay_features(records, state_config(settings), catalog, [test_ms])[test_ms]
    x = np.vstack([rows[u] for u in sorted(rows)])
    for gi, group in enumerate(catalog.names):
        card = registry.card(group, registry.production_version(group))
        m = card.metrics
        base, n = _label_rate(world, catalog, gi, PLAN.test)
        assert (m["base_rate"], m["n"]) == (pytest.approx(base), n)
        assert m["calibration_base_rate"] == pytest.approx(_label_rate(world, catalog, gi, PLAN.calibrate[0])[0])
        assert m["mean_score"] == pytest.approx(float(production_predict(settings, group, x)[0].mean()), rel=1e-5)
        curve = card.calibration_curve
        assert sum(c for _, _, c in curve) == n
        assert m["ece"] == pytest.approx(sum(abs(p - o) * c for p, o, c in curve) / n)


def test_a_worse_candidate_is_registered_but_production_stays_unless_forced(world, trained_dir, tmp_path, chdb_dsn):
    shutil.copytree(trained_dir / "models", tmp_path / "models")
    settings = make_settings(tmp_path, world, chdb_dsn)
    registry = ModelRegistry(settings.models_dir)
    records, _ = app.read_file_records([write_events(tmp_path / "ev.jsonl", world.events)], _mapping())
    production_auc = registry.card("coffee", 1).metrics["roc_auc"]
    flat = {**SMALL_DATA_PARAMS, "min_child_weight": 1e9}  # no split is allowed: one score for everyone
    lines: list[str] = []
    (card,) = app.train(settings, records, groups=["coffee"], plan=PLAN, progress=lines.append, params=flat)
    assert card.metrics["roc_auc"] == 0.5 < production_auc - 0.005
    assert registry.production_version("coffee") == 1
    assert registry.stage("coffee", 2) is Stage.CANDIDATE
    (line,) = [x for x in lines if x.strip().startswith("coffee")]
    assert "not promoted, v1 stays" in line and "ROC AUC may drop by at most 0.005" in line
    stages = "SELECT version, stage FROM {db}.models FINAL WHERE group_id = 'coffee' ORDER BY version"
    # v1 came with the copied registry: its log (actions.jsonl) puts it in the table too
    assert query(settings, stages) == [(1, "production"), (2, "candidate")]

    # The same model again with --force replaces production.
    app.train(settings, records, groups=["coffee"], plan=PLAN, progress=lines.append, params=flat, force=True)
    assert registry.production_version("coffee") == 3
    assert query(settings, stages) == [(1, "archived"), (2, "archived"), (3, "production")]
    # A better model replaces it through the gate; the table archives the one it replaces.
    app.train(settings, records, groups=["coffee"], plan=PLAN, progress=lines.append, params=SMALL_DATA_PARAMS)
    assert query(settings, stages) == [(1, "archived"), (2, "archived"), (3, "archived"), (4, "production")]


def test_retraining_on_production_examples_registers_nothing_and_forced_gives_the_same_model(
    world, trained_dir, tmp_path, chdb_dsn
):
    shutil.copytree(trained_dir / "models", tmp_path / "models")
    settings = make_settings(tmp_path, world, chdb_dsn)
    records, _ = app.read_file_records([write_events(tmp_path / "ev.jsonl", world.events)], _mapping())
    again = app.train(
        settings, records, groups=["coffee"], plan=PLAN, progress=lambda _: None, params=SMALL_DATA_PARAMS
    )
    registry = ModelRegistry(settings.models_dir)
    assert again == [] and registry.versions("coffee") == [1]  # same examples: nothing new
    (card,) = app.train(
        settings, records, groups=["coffee"], plan=PLAN, progress=lambda _: None, params=SMALL_DATA_PARAMS, force=True
    )
    assert card.metrics == registry.card("coffee", 1).metrics  # training is deterministic
    assert card.data_fingerprint == registry.card("coffee", 1).data_fingerprint
    assert registry.production_version("coffee") == 2  # as good as production: the gate lets it through


def test_a_production_model_that_cannot_read_the_current_features_is_not_compared(
    world, trained_dir, chdb_dsn, tmp_path
):
    settings = make_settings(trained_dir, world, chdb_dsn)
    catalog = app.load_catalog(settings)
    cfg = state_config(settings)
    records, _ = app.read_file_records([write_events(tmp_path / "ev.jsonl", world.events)], _mapping())
    ex = build_examples(records, cfg, catalog, PLAN.all_cutoffs())
    art = ModelRegistry(settings.models_dir).load("coffee", 1)
    again = slice_metrics(cfg.spec, ex, PLAN, art)  # the card's own test slice: the card's metrics
    assert again == {k: pytest.approx(art.card.metrics[k]) for k in again}
    renamed = (*art.card.feature_names[:-1], "grp=coffee|stat=gone")
    stale = ModelArtifact(card=art.card.model_copy(update={"feature_names": renamed}), booster=art.booster)
    assert slice_metrics(cfg.spec, ex, PLAN, stale) is None
