"""What training writes on a model card, checked against labels counted by brute force."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest

from models.registry import ModelRegistry
from offline_train.dataset import replay_features, to_ms
from propstream import app
from tests.integration.conftest import PLAN, _mapping, make_settings, write_events
from tests.integration.helpers import production_predict, state_config

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
