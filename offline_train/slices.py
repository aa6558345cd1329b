"""The test slice a model was judged on, kept in its registry folder, so a promotion can report without the store.

``propstream models promote`` / ``rollback`` print what the move does to each
threshold (``offline_train.thresholds``) on the new model's test slice, scored
by the old and the new model. Rebuilding that slice needs the events archive,
which cannot be read while a running stream holds the embedded store. So
``train_all`` saves the slice next to the model when it registers it
(``test_slice.npz``): the training replay's own as-of features at the test
cutoff (only the columns the new and the then-production model read, in
float32, which is what XGBoost compares anyway, so the scores are the same),
the customers and the group's labels. ``stored_threshold_report`` rebuilds the
report from that file alone.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = save_slice(d, ("a", "b"), np.array([[1.0, 2.0], [3.0, 4.0]]), ["u1", "u2"], np.array([True, False]), "T")
>>> s = load_slice(d); (s.names, s.x.tolist(), s.users, s.labels.tolist(), s.at)
(('a', 'b'), [[1.0, 2.0], [3.0, 4.0]], ['u1', 'u2'], [True, False], 'T')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.artifact import FeatureMismatchError, ModelArtifact
from models.registry import ModelRegistry, RegistryError
from offline_train.thresholds import ThresholdReport, threshold_report

SLICE_FILE = "test_slice.npz"


@dataclass(frozen=True)
class StoredSlice:
    """Feature columns ``names`` of the customers ``users`` at cutoff ``at`` (ISO), and the group's labels."""

    names: tuple[str, ...]
    x: np.ndarray
    users: list[str]
    labels: np.ndarray
    at: str


def save_slice(
    folder: Path, names: tuple[str, ...], x: np.ndarray, users: list[str], labels: np.ndarray, at: str
) -> Path:
    """Write the slice into ``folder`` (atomically: a reader never sees half a file); returns its path."""
    path = folder / SLICE_FILE
    tmp = folder / (SLICE_FILE + ".tmp")
    with tmp.open("wb") as f:
        np.savez_compressed(
            f,
            names=np.array(names, dtype=str),
            x=np.asarray(x, dtype=np.float32),
            users=np.array(users, dtype=str),
            labels=np.asarray(labels, dtype=bool),
            at=np.array(at),
        )
    tmp.replace(path)
    return path


def load_slice(folder: Path) -> StoredSlice | None:
    """The slice saved in ``folder``, or None if there is none (a model trained before slices were kept)."""
    path = folder / SLICE_FILE
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as z:
        return StoredSlice(tuple(z["names"].tolist()), z["x"], z["users"].tolist(), z["labels"], str(z["at"].item()))


def _probs(art: ModelArtifact, s: StoredSlice) -> np.ndarray:
    return art.predict(s.x[:, art.input_positions(s.names)])


def stored_threshold_report(
    registry: ModelRegistry, group: str, new_version: int, old_version: int | None
) -> ThresholdReport | None:
    """Old vs new model on the new model's stored test slice; None if it has none.

    The old model is left out (as a group's first model is) if it cannot be
    loaded or reads a feature the slice does not hold.
    """
    s = load_slice(registry.folder(group, new_version))
    if s is None:
        return None
    new = registry.load(group, new_version)
    old_probs = None
    if old_version is not None:
        try:
            old_probs = _probs(registry.load(group, old_version), s)
        except (RegistryError, FeatureMismatchError):
            old_version = None
    return threshold_report(group, s.labels, old_probs, _probs(new, s), old_version, new_version, s.at)
