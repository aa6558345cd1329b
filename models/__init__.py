"""Models: the artifact (booster, calibration, feature names), the registry, batched scoring with hot swap."""

from schemas.exports import lazy_exports

_EXPORTS = {
    "ModelArtifact": "models.artifact",
    "ModelError": "models.artifact",
    "FeatureMismatchError": "models.artifact",
    "ModelRegistry": "models.registry",
    "ProductionModels": "models.scorer",
    "GroupScorer": "models.scorer",
    "apply_calibration": "models.calibration",
    "fit_platt": "models.calibration",
    "fit_isotonic": "models.calibration",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports("models", _EXPORTS)
