"""Print the model cards' test metrics (ROC AUC, ECE, ...) of the production models as a Markdown table.

    python bench/model_quality.py [--data-dir DIR]

The metrics are computed at training time on the test cutoff (2017-12-01 for
the demo), by models trained only on earlier cutoffs; `propstream demo` or
`propstream train` writes them. "mean score" against "base rate" is the part
of ECE that a shift of the base rate from the calibration slice ("calibration
base rate") to the test slice explains.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from models.registry import ModelRegistry

REFERENCE = {"soft_drinks": 0.831, "beef": 0.835, "coffee_tea": 0.846, "baby": 0.857, "summer_grilling": 0.807}


def _opt(metrics: dict[str, float], name: str) -> str:
    """A metric that cards written before it existed lack."""
    return f"{metrics[name]:.3f}" if name in metrics else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", default="propstream-data")
    args = ap.parse_args()
    registry = ModelRegistry(Path(args.data_dir) / "models")
    groups = sorted(p.parent.name for p in registry.root.glob("*/PRODUCTION"))
    print(
        "| group | ROC AUC | reference | ECE | avg precision | Brier | base rate | mean score "
        "| calibration base rate | distinct scores |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    aucs, eces = [], []
    for g in groups:
        card = registry.card(g, registry.production_version(g) or 0)
        m = card.metrics
        aucs.append(m["roc_auc"])
        eces.append(m["ece"])
        ref = f"{REFERENCE[g]:.3f}" if g in REFERENCE else ""
        print(
            f"| {g} | {m['roc_auc']:.3f} | {ref} | {m['ece']:.3f} | {m['average_precision']:.3f} | "
            f"{m['brier']:.3f} | {m['base_rate']:.3f} | {_opt(m, 'mean_score')} | "
            f"{_opt(m, 'calibration_base_rate')} | {int(m['distinct_predictions'])} |"
        )
    if groups:
        ok = sum(e <= 0.03 for e in eces)
        print(f"\nmean ROC AUC {sum(aucs) / len(aucs):.3f}; ECE <= 0.03 for {ok} of {len(eces)} groups")


if __name__ == "__main__":
    main()
