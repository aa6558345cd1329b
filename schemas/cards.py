"""Model cards: what a registered model is, how it was trained and how good it is."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class Stage(StrEnum):
    """Lifecycle of a registered model."""

    CANDIDATE = "candidate"
    PRODUCTION = "production"
    ARCHIVED = "archived"


class Calibration(BaseModel):
    """A monotone map from raw model output to probability (piecewise linear)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str = "isotonic"
    x: tuple[float, ...]
    y: tuple[float, ...]


class ModelCard(BaseModel):
    """Everything needed to trust, reproduce and serve one group's model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    group_id: str
    version: int = Field(ge=1)
    stage: Stage = Stage.CANDIDATE
    feature_names: tuple[str, ...]
    calibration: Calibration
    train_cutoffs: tuple[datetime, ...] = ()
    calibration_cutoffs: tuple[datetime, ...] = ()
    test_cutoff: datetime | None = None
    params: dict[str, float | int | str] = {}
    metrics: dict[str, float] = {}
    calibration_curve: tuple[tuple[float, float, int], ...] = ()
    n_train: int = 0
    created_at: datetime
    # sha256 of what training read (cutoffs, feature names, example rows and labels, params): a model
    # trained again on the same examples is the same model, and is not registered twice.
    data_fingerprint: str = ""
