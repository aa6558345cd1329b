"""Offline training: examples by replaying the stream's state machine, training, evaluation, promotion, bulk rescore."""

from schemas.exports import lazy_exports

_EXPORTS = {
    "build_examples": "offline_train.dataset",
    "replay_features": "offline_train.dataset",
    "train_all": "offline_train.train",
    "TrainPlan": "offline_train.train",
    "PromotionGate": "offline_train.train",
    "evaluate": "offline_train.metrics",
    "bulk_rescore": "offline_train.rescore",
    "RescoreResult": "offline_train.rescore",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports("offline_train", _EXPORTS)
