"""A model artifact: XGBoost booster + calibration + feature names, described by its card."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from models.calibration import apply_calibration
from schemas.cards import ModelCard
from schemas.errors import PropstreamError

if TYPE_CHECKING:
    import xgboost as xgb


class ModelError(PropstreamError):
    """Base error of the models package."""


class FeatureMismatchError(ModelError):
    """A model expects features the running feature spec does not provide."""


@dataclass
class ModelArtifact:
    """A trained, calibrated model of one product group."""

    card: ModelCard
    booster: xgb.Booster

    def raw_scores(self, x: np.ndarray) -> np.ndarray:
        """Uncalibrated probabilities for rows laid out as ``card.feature_names``.

        XGBoost compares features in float32 whatever the input type, so
        handing it float32 gives the same scores with less copying.
        """
        x32 = np.asarray(x, dtype=np.float32)
        return np.asarray(self.booster.inplace_predict(x32, validate_features=False), dtype=np.float64)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for rows laid out as ``card.feature_names``."""
        return self.calibrate(self.raw_scores(x))

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of this model's raw scores (``raw_scores``, or its output of a ``GroupForest``)."""
        return apply_calibration(self.card.calibration, raw)

    def input_positions(self, names: tuple[str, ...] | dict[str, int]) -> np.ndarray:
        """Positions of this model's inputs in a feature vector; refuses a mismatch."""
        index = names if isinstance(names, dict) else {n: i for i, n in enumerate(names)}
        missing = [n for n in self.card.feature_names if n not in index]
        if missing:
            msg = (
                f"model {self.card.group_id} v{self.card.version} needs {len(missing)} feature(s) "
                f"the running feature spec lacks, e.g. {missing[:3]}; retrain it with "
                "`propstream train` against the current spec"
            )
            raise FeatureMismatchError(msg)
        return np.array([index[n] for n in self.card.feature_names], dtype=np.intp)
