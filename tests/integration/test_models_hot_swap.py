"""Models: a promoted model is served without a restart, and every customer is rescored with it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from models.artifact import FeatureMismatchError
from models.registry import ModelRegistry
from models.scorer import GroupScorer, ProductionModels
from propstream import app
from propstream.cli import main
from schemas.events import Event, EventRecord
from stream.shard import CustomerShard, ShardInput, ShardProcessor
from stream.state import StateConfig
from tests.integration.conftest import PLAN, SMALL_DATA_PARAMS, make_settings, write_events
from tests.integration.helpers import assert_scores_current, query, run

pytestmark = pytest.mark.integration


def test_promoted_model_rescores_every_customer_of_the_shard(world, trained_dir, tmp_path, chdb_dsn):
    shutil.copytree(trained_dir / "models", tmp_path / "models")
    settings = make_settings(tmp_path, world, chdb_dsn)
    catalog = app.load_catalog(settings)
    spec = app.feature_spec(catalog)
    cfg = StateConfig.build(spec)
    registry = ModelRegistry(settings.models_dir)
    models = ProductionModels.load(spec, registry, poll_seconds=0.0)
    proc = ShardProcessor(cfg, catalog, models, allowed_lateness_ms=86_400_000)
    shard = CustomerShard(0)
    records = [Event.model_validate(e).to_record("t") for e in world.events[:2000]]
    first = proc.process(shard, ShardInput(0, records, None, watermark=max(r.ts_ms for r in records)))
    users = {r.user_id for r in records}
    assert {(u, g) for u, g in zip(first.scores.user_id, first.scores.group_id, strict=True)} == {
        (u, g) for u in users for g in spec.groups
    }

    # Retrain one group and promote it: the next batch, even with no events, rescores all customers.
    examples_records = [Event.model_validate(e).to_record("t") for e in world.events]
    # force: the same examples would otherwise leave production as it is (nothing new to promote).
    app.train(
        settings,
        examples_records,
        groups=["coffee"],
        plan=PLAN,
        progress=lambda _: None,
        params=SMALL_DATA_PARAMS,
        force=True,
    )
    new_version = registry.production_version("coffee")
    assert new_version == 2
    tick = proc.process(shard, ShardInput(0, [], None, watermark=shard.clock))
    rescored = [
        (u, v)
        for u, g, v in zip(tick.scores.user_id, tick.scores.group_id, tick.scores.model_version, strict=True)
        if g == "coffee"
    ]
    assert {u for u, _ in rescored} == users
    assert {v for _, v in rescored} == {new_version}
    assert set(tick.scores.group_id) == {"coffee"}  # other groups' features did not change


def test_the_last_score_cache_holds_live_customers_only(world, trained_dir, tmp_path, chdb_dsn):
    """A customer whose history has expired leaves the shard with its cached scores (memory bounded by the living)."""
    settings = make_settings(tmp_path, world, chdb_dsn)
    catalog = app.load_catalog(settings)
    cfg = StateConfig.build(app.feature_spec(catalog))
    models = ProductionModels.load(cfg.spec, ModelRegistry(trained_dir / "models"), poll_seconds=3600.0)
    proc = ShardProcessor(cfg, catalog, models, allowed_lateness_ms=86_400_000)
    shard = CustomerShard(0)
    day, start = 86_400_000, 1_483_228_800_000  # 2017-01-01
    for d in range(0, 1_000, 10):  # one new customer a day for 1,000 days, one event each, ten days a batch
        batch = [
            EventRecord(f"once-{d + i}", "i1", 2, start + (d + i) * day, f"e{d + i}", 1.0, 100, "t") for i in range(10)
        ]
        proc.process(shard, ShardInput(0, batch, None, watermark=batch[-1].ts_ms))
        assert shard.roster.scored().keys() <= shard.customers.keys()
    assert len(shard.customers) < 400  # a year of history and recency, then a customer is forgotten
    assert shard.roster.scored().keys() == shard.customers.keys() == set(shard.roster)


def test_model_whose_features_do_not_match_the_spec_is_refused(world, trained_dir, tmp_path, chdb_dsn):
    settings = make_settings(tmp_path, world, chdb_dsn)
    spec = app.feature_spec(app.load_catalog(settings))
    art = ModelRegistry(trained_dir / "models").load("coffee", 1)
    narrower = spec.model_copy(update={"windows": spec.windows[:2]})
    with pytest.raises(FeatureMismatchError, match="propstream train"):
        GroupScorer.build(narrower, 0, art)
    scorer = GroupScorer.build(spec, spec.groups.index("coffee"), art)
    assert scorer.score(np.vstack([StateConfig.build(spec).new_row()])).shape == (1,)


def test_a_model_promoted_while_the_stream_is_down_is_rescored_in_bulk(world, trained_dir, tmp_path, chdb_dsn, capsys):
    shutil.copytree(trained_dir / "models", tmp_path / "models")
    settings = make_settings(tmp_path, world, chdb_dsn)
    run(settings, [write_events(tmp_path / "ev.jsonl", world.events[:3000])])
    assert assert_scores_current(settings) == dict.fromkeys(app.feature_spec(app.load_catalog(settings)).groups, 1)
    history = "SELECT group_id, model_version, count() FROM {db}.score_history GROUP BY ALL ORDER BY ALL"
    before = query(settings, history)
    n_customers = query(settings, "SELECT count() FROM {db}.customer_features FINAL")[0][0]

    # Retraining (forced: the examples are production's) promotes coffee v2 and rescores the stored
    # customers at its end: no stream runs.
    records = [Event.model_validate(e).to_record("t") for e in world.events]
    app.train(
        settings, records, groups=["coffee"], plan=PLAN, progress=lambda _: None, params=SMALL_DATA_PARAMS, force=True
    )
    versions = assert_scores_current(settings)
    assert versions["coffee"] == 2 and set(versions.values()) == {1, 2}
    assert query(settings, history) == sorted([*before, ("coffee", 2, n_customers)])
    assert app.rescore(settings, progress=lambda _: None).groups == []  # nothing stale: nothing written
    assert query(settings, history) == sorted([*before, ("coffee", 2, n_customers)])

    # Rolled back by hand: `propstream rescore` brings the v1 scores back.
    ModelRegistry(settings.models_dir).promote("coffee", 1)
    env = {
        "PROPSTREAM_CLICKHOUSE__DATABASE": settings.clickhouse.database,
        "PROPSTREAM_GROUPS_FILE": str(world.groups_file),
    }
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        assert main(["rescore", "--data-dir", str(tmp_path), "--clickhouse", chdb_dsn, "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {
        "groups": ["coffee"],
        "customers": n_customers,
        "score_rows": n_customers,
    }
    assert assert_scores_current(settings)["coffee"] == 1
