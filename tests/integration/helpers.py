"""Reading results back from ClickHouse for the invariant tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.registry import ModelRegistry
from propstream import app
from schemas.mapping import ColumnMapping
from schemas.settings import Settings
from stream.sinks.base import RunStats
from stream.state import StateConfig


def run(settings: Settings, files: list[Path]) -> RunStats:
    return app.run_stream(settings, app.build_source(settings, files), ColumnMapping(), progress=None)


def state_config(settings: Settings) -> StateConfig:
    return StateConfig.build(app.feature_spec(app.load_catalog(settings)))


def query(settings: Settings, sql: str) -> list[tuple]:
    client = app.client_for(settings)
    return client.query(sql.format(db=settings.clickhouse.database)).result_rows


def stored_features(settings: Settings) -> dict[str, np.ndarray]:
    """customer_features FINAL as dense vectors (absent counters are 0)."""
    cfg = state_config(settings)
    index = cfg.spec.index
    out = {}
    for user, feats in query(settings, "SELECT user_id, features FROM {db}.customer_features FINAL"):
        row = cfg.new_row()
        for name, value in feats.items():
            row[index[name]] = value
        out[user] = row
    return out


def stored_scores(settings: Settings) -> dict[tuple[str, str], tuple[float, int]]:
    rows = query(settings, "SELECT user_id, group_id, score, model_version FROM {db}.scores FINAL")
    return {(u, g): (s, v) for u, g, s, v in rows}


def production_predict(settings: Settings, group: str, rows: np.ndarray) -> tuple[np.ndarray, int]:
    """The registry's production model of ``group`` applied to dense feature rows."""
    registry = ModelRegistry(settings.models_dir)
    version = registry.production_version(group)
    art = registry.load(group, version)
    pos = art.input_positions(state_config(settings).spec.index)
    return art.predict(np.ascontiguousarray(rows[:, pos])), version


def assert_scores_current(settings: Settings) -> dict[str, int]:
    """No stale score: every stored score is its group's production model on the stored features.

    Returns the production version of each group.
    """
    feats = stored_features(settings)
    scores = stored_scores(settings)
    users = sorted(feats)
    rows = np.vstack([feats[u] for u in users])
    versions = {}
    for group in state_config(settings).spec.groups:
        expected, version = production_predict(settings, group, rows)
        got = np.array([scores[(u, group)][0] for u in users])
        np.testing.assert_array_equal(got, expected, err_msg=group)
        assert {scores[(u, group)][1] for u in users} == {version}
        versions[group] = version
    return versions
