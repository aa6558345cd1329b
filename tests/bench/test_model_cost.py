"""bench/model_cost.py's table: AUC change against the first setting, margin to the five floors, cost per refresh."""

from __future__ import annotations

from bench.backtest import REFERENCE
from bench.model_cost import SETTINGS, Outcome, Setting, render
from offline_train.train import DEFAULT_PARAMS, DEFAULT_ROUNDS


def _outcome(setting: Setting, aucs: dict[str, float], us_per_row: float) -> Outcome:
    o = Outcome(setting)
    for g, auc in aucs.items():
        o.metrics[g] = {"roc_auc": auc, "ece": 0.02, "brier": 0.15}
        o.trees[g] = setting.rounds
        o.seconds_per_row[g] = us_per_row * 1e-6
    return o


def test_the_table_shows_the_floor_a_cheaper_setting_misses_and_its_cost_per_refresh():
    floors_met = {g: ref + 0.001 for g, ref in REFERENCE.items()}
    cheaper = {**floors_met, "soft_drinks": REFERENCE["soft_drinks"] - 0.002}
    table = render(
        [
            _outcome(Setting("current"), floors_met, us_per_row=6.0),
            _outcome(Setting("small", {"max_depth": 4, "eta": 0.1}, 100), cheaper, us_per_row=2.0),
        ]
    ).splitlines()
    current, small = table[2], table[3]
    assert "| +0.0000 | +0.0010 (" in current  # the baseline: no change, every floor met by 0.001
    assert "| -0.0020 (soft_drinks) |" in small  # the worst margin names its group
    assert f"| {-0.003 / len(REFERENCE):+.4f} |" in small  # mean AUC change against the first row
    assert small.endswith("| 2.00 | 10 |")  # µs per row and group, per refresh over the 5 groups
    assert current.endswith("| 6.00 | 30 |")


def test_settings_describe_what_they_train_and_have_unique_names():
    p = DEFAULT_PARAMS
    assert Setting("current").describe() == f"depth {p['max_depth']}, eta {p['eta']}, {DEFAULT_ROUNDS} rounds"
    es = next(s for s in SETTINGS if s.early_stop)
    assert es.describe().startswith(f"depth {es.params['max_depth']}, eta {es.params['eta']}, <= {es.rounds} rounds")
    assert len({s.name for s in SETTINGS}) == len(SETTINGS)
