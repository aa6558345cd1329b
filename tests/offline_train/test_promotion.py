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
