"""Batched scoring with the current production model of every group, hot-swapped.

Everything per group (input positions in the feature vector, the groups whose
features are its inputs, booster, calibration) is resolved when a model is
loaded, never per event. ``refresh`` polls the registry's production pointers
at most every ``poll_seconds`` and swaps changed models in place; a group whose
pointer was deleted, or that the groups file marks inactive (``inactive``,
``schemas.groups.GroupsFileWatch``), stops being scored (its stored scores stay
as they were); it is scored again, every customer, once it is back.
``on_swap``, when set, is called after a poll that swapped anything (the
stream records the change in the ``models`` table from there).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from models.artifact import ModelArtifact, ModelError
from models.forest import GroupForest
from models.registry import ModelRegistry
from schemas.features import FeatureSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupScorer:
    """One group's production model, resolved against the running feature spec."""

    group_index: int
    version: int
    positions: np.ndarray  # model inputs -> positions in the dense feature vector
    input_groups: np.ndarray  # groups (incl. all) whose features feed the model
    artifact: ModelArtifact

    @classmethod
    def build(cls, spec: FeatureSpec, group_index: int, artifact: ModelArtifact) -> GroupScorer:
        """Resolve an artifact against ``spec``; raises FeatureMismatchError on mismatch."""
        positions = artifact.input_positions(spec.index)
        groups = spec.all_groups
        used = sorted({groups.index(spec.group_of_feature(n)) for n in artifact.card.feature_names})
        return cls(group_index, artifact.card.version, positions, np.array(used, dtype=np.intp), artifact)

    def score(self, rows: np.ndarray, which: np.ndarray | None = None) -> np.ndarray:
        """Calibrated probabilities for dense feature rows (only rows ``which``, if given).

        Only this model's columns are gathered: a full row is much wider than one model's inputs.
        """
        return self.artifact.predict(rows[:, self.positions] if which is None else rows[np.ix_(which, self.positions)])


class ProductionModels:
    """The production model of each group, as the registry says right now.

    Built empty (no I/O); ``load`` builds one and reads the registry.
    """

    def __init__(
        self,
        spec: FeatureSpec,
        registry: ModelRegistry,
        poll_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        threads: int = 1,
        inactive: Callable[[], frozenset[str]] | None = None,
    ):
        self.spec = spec
        self.inactive = inactive  # polled with the registry: deactivated groups are not served
        self.registry = registry
        self.poll_seconds = poll_seconds
        self.threads = threads  # XGBoost threads per predict call (scores do not depend on it)
        self._clock = clock
        self._next_poll = float("-inf")
        self.scorers: dict[int, GroupScorer] = {}
        self.forest: GroupForest | None = None  # the scorers joined into one booster (None: cannot be)
        self.on_swap: Callable[[], None] | None = None

    @classmethod
    def load(
        cls,
        spec: FeatureSpec,
        registry: ModelRegistry,
        poll_seconds: float = 5.0,
        threads: int = 1,
        inactive: Callable[[], frozenset[str]] | None = None,
    ) -> ProductionModels:
        """The production models of ``registry`` now (models that cannot be loaded are logged and skipped)."""
        models = cls(spec, registry, poll_seconds, threads=threads, inactive=inactive)
        models.refresh(force=True)
        return models

    def refresh(self, force: bool = False) -> bool:
        """Swap in models whose production pointer moved; returns whether any did."""
        now = self._clock()
        if not force and now < self._next_poll:
            return False
        self._next_poll = now + self.poll_seconds
        swapped = False
        off = self.inactive() if self.inactive is not None else frozenset()
        for gi, group in enumerate(self.spec.groups):
            version = None if group in off else self.registry.production_version(group)
            current = self.scorers.get(gi)
            if version is None:  # deactivated, or no pointer (deleted by hand): the group is not served any more
                if current is not None:
                    del self.scorers[gi]
                    swapped = True
                    why = "the group is deactivated" if group in off else f"{self.registry.root / group} has no pointer"
                    log.warning("model %s v%d is no longer served: %s", group, current.version, why)
                continue
            if current is not None and current.version == version:
                continue
            try:
                artifact = self.registry.load(group, version)
                artifact.booster.set_param({"nthread": self.threads})
                scorer = GroupScorer.build(self.spec, gi, artifact)
            except ModelError as exc:
                log.error("keeping %s v%s: %s", group, current and current.version, exc)
                continue
            self.scorers[gi] = scorer
            swapped = True
            log.info("model %s v%d is now serving", group, version)
        if swapped:
            self.forest = GroupForest.build(list(self.scorers.values()), len(self.spec.names), self.threads)
            if self.on_swap is not None:
                self.on_swap()
        return swapped

    def versions(self) -> dict[int, int]:
        """Group index -> production version being served."""
        return {gi: s.version for gi, s in self.scorers.items()}
