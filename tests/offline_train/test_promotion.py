"""The promotion gate: a candidate replaces production unless it is worse on the same test slice."""

from __future__ import annotations

import pytest

from offline_train.train import PromotionGate
from schemas.settings import TrainSettings

PROD = {"roc_auc": 0.84, "brier": 0.150}


@pytest.mark.parametrize(
    ("candidate", "promoted", "why"),
    [
        ({"roc_auc": 0.84, "brier": 0.150}, True, "ROC AUC 0.8400 vs 0.8400"),
        ({"roc_auc": 0.836, "brier": 0.150}, True, "ROC AUC 0.8360 vs 0.8400"),  # within the allowed drop
        ({"roc_auc": 0.834, "brier": 0.140}, False, "ROC AUC may drop by at most 0.005"),
        ({"roc_auc": 0.90, "brier": 0.1525}, False, "Brier may rise by at most 0.002"),
        ({"roc_auc": 0.90, "brier": 0.1515}, True, "Brier 0.1515 vs 0.1500"),
    ],
)
def test_a_candidate_may_be_slightly_worse_but_not_more(candidate, promoted, why):
    ok, reason = PromotionGate(max_auc_drop=0.005, max_brier_rise=0.002).decide(candidate, PROD)
    assert ok is promoted
    assert why in reason


def test_without_a_comparable_production_model_or_test_slice_the_candidate_is_promoted():
    gate = PromotionGate.from_settings(TrainSettings())
    assert gate.decide({"roc_auc": 0.6, "brier": 0.2}, None) == (
        True,
        "no readable production model for the current features",
    )
    assert gate.decide({}, PROD) == (True, "no test slice to compare on")


def _examples(spec, n: int, cutoffs, rng):
    """Rows at each cutoff: `learnable` buys when one of its inputs is high, `noise` at random, `never` never."""
    import numpy as np

    from offline_train.dataset import Examples, to_ms

    rows = n * len(cutoffs)
    x = rng.poisson(2.0, size=(rows, len(spec.names))).astype(np.float64)
    signal = spec.index[spec.default_inputs("learnable")[0]]
    labels = np.zeros((rows, len(spec.groups)), dtype=bool)
    labels[:, spec.groups.index("learnable")] = x[:, signal] + rng.normal(0, 1, rows) > 2.5
    labels[:, spec.groups.index("noise")] = rng.random(rows) < 0.3
    at = np.repeat([to_ms(c) for c in cutoffs], n)
    return Examples(at, [f"u{i % n}" for i in range(rows)], x, labels)


@pytest.mark.parametrize("forced", [False, True])
def test_a_model_that_cannot_rank_is_never_promoted_even_as_the_first_or_forced(tmp_path, forced):
    from datetime import UTC, datetime

    import numpy as np

    from models.registry import ModelRegistry
    from offline_train.train import DEFAULT_GATE, TrainPlan, train_all
    from schemas.features import FeatureSpec

    spec = FeatureSpec(groups=("learnable", "noise", "never"))
    cutoffs = [datetime(2024, m, 1, tzinfo=UTC) for m in (1, 2, 3, 4)]
    ex = _examples(spec, 400, cutoffs, np.random.default_rng(7))
    plan = TrainPlan(tuple(cutoffs[:2]), (cutoffs[2],), cutoffs[3])
    registry = ModelRegistry(tmp_path / "models")
    lines: list[str] = []
    small = {"min_child_weight": 1}  # the default (100) is for tens of thousands of rows
    cards = train_all(spec, ex, plan, registry, gate=DEFAULT_GATE, progress=lines.append, params=small, force=forced)
    by_group = {c.group_id: c for c in cards}
    assert by_group["learnable"].metrics["roc_auc"] > 0.7
    assert registry.production_version("learnable") == by_group["learnable"].version
    assert registry.production_version("noise") is None and registry.production_version("never") is None
    noise = next(line for line in lines if "noise" in line)
    assert "not promoted, the group has no scores" in noise and "below the floor 0.55" in noise
    never = next(line for line in lines if line.split()[0] == "never")
    assert "only one class" in never  # no buyer in the test slice: ranking is undefined


def test_the_data_fingerprint_changes_with_the_trainers_default_parameters(monkeypatch):
    """A model trained under other defaults is not 'unchanged': ``propstream train`` must not skip it."""
    from datetime import UTC, datetime

    import numpy as np

    from offline_train import train
    from schemas.features import FeatureSpec

    spec = FeatureSpec(groups=("learnable", "noise", "never"))
    cutoffs = [datetime(2024, m, 1, tzinfo=UTC) for m in (1, 2, 3, 4)]
    ex = _examples(spec, 50, cutoffs, np.random.default_rng(3))
    plan = train.TrainPlan(tuple(cutoffs[:2]), (cutoffs[2],), cutoffs[3])
    before = train.data_fingerprint(spec, "learnable", ex, plan)
    assert train.data_fingerprint(spec, "learnable", ex, plan) == before  # deterministic
    monkeypatch.setitem(train.DEFAULT_PARAMS, "max_depth", int(train.DEFAULT_PARAMS["max_depth"]) + 2)
    assert train.data_fingerprint(spec, "learnable", ex, plan) != before
    # An override equal to the default is the same training as none.
    monkeypatch.undo()
    same = {"max_depth": train.DEFAULT_PARAMS["max_depth"]}
    assert train.data_fingerprint(spec, "learnable", ex, plan, same) == before
