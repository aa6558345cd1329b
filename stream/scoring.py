"""Scoring a shard's batch with each group's production model, in a thread of its own.

Per batch: the groups whose production model differs from the one the shard
last used are found (``swapped``: the registry is polled); each group scores
the rows whose model inputs changed, or every row after a swap (``plan``), all
groups in one ``inplace_predict`` call of the models joined into one booster
(``models.forest.GroupForest``; one call per group when they cannot be joined),
in a scoring thread (``start``: XGBoost releases the GIL, so the caller builds
feature records meanwhile); ``finish`` keeps only the
scores that moved (all of them after a swap) and remembers them per customer,
in the shard's score matrix (``stream.roster.CustomerRoster``: one float64 row
per customer, not an array object each).

>>> import numpy as np
>>> class Scorer:  # stands in for models.scorer.GroupScorer: score = first feature
...     group_index, version, input_groups = 0, 1, np.array([0])
...     def score(self, rows, which): return rows[which, 0]
>>> class Models:  # stands in for models.scorer.ProductionModels
...     scorers, forest = {0: Scorer()}, None
...     def refresh(self): pass
...     def versions(self): return {0: 1}
>>> from stream.roster import CustomerRoster
>>> scoring, last, used = ShardScoring(Models(), ("coffee",)), CustomerRoster(), {}
>>> def batch(values, changed):
...     swapped = scoring.swapped(used)
...     pending = scoring.start(np.array([[v] for v in values]), np.array([[c] for c in changed]), swapped)
...     cols = ScoreColumns()
...     scoring.finish(pending, ["u1", "u2"], [1, 1], 0, last, cols)
...     return list(zip(cols.user_id, cols.score))
>>> batch([0.5, 0.7], [True, True])  # a new model: every row is scored and written
[('u1', 0.5), ('u2', 0.7)]
>>> batch([0.5, 0.9], [True, True])  # u1's score did not move
[('u2', 0.9)]
>>> batch([0.1, 0.1], [False, False])  # inputs unchanged: not scored at all
[]
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from schemas.tables import row_version

if TYPE_CHECKING:
    from models.forest import GroupForest, ScorePlan
    from models.scorer import ProductionModels


class LastScores(Protocol):
    """The last score written per customer and group (``stream.roster.CustomerRoster``)."""

    def take(self, users: Sequence[str], n_groups: int) -> np.ndarray:
        """Scores of ``users`` (a copy: users x ``n_groups``; NaN: none written)."""

    def put(self, users: Sequence[str], scores: np.ndarray) -> None:
        """Remember ``scores`` (one row per user)."""


@dataclass
class ScoreColumns:
    """Score rows, column-oriented (one as-of per shard output)."""

    as_of: int = 0
    user_id: list[str] = field(default_factory=list)
    group_id: list[str] = field(default_factory=list)
    score: list[float] = field(default_factory=list)
    model_version: list[int] = field(default_factory=list)
    version: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.user_id)


@dataclass
class PendingScores:
    """Predictions under way in the scoring thread."""

    plan: ScorePlan
    predictions: Future[list[np.ndarray]]


class ShardScoring:
    """The production models applied to shards' batches; holds the models and the scoring thread, not state."""

    def __init__(self, models: ProductionModels, group_names: tuple[str, ...]):
        self.models = models
        self.group_names = group_names
        self.n_groups = len(group_names)
        self._pool: ThreadPoolExecutor | None = None  # started at the first batch scored

    def swapped(self, model_versions: dict[int, int], rewrite: bool = False) -> set[int]:
        """Poll the registry; groups whose production model is not the one in ``model_versions`` (all on a rewrite).

        ``model_versions`` (a shard's: group -> version it last used) is updated.
        """
        swapped: set[int] = set()
        self.models.refresh()
        served = self.models.versions()
        for gi in model_versions.keys() - served.keys():  # unserved now: if it comes back, rescore every row
            del model_versions[gi]
        for gi, v in served.items():
            if model_versions.get(gi) != v or rewrite:
                swapped.add(gi)
                model_versions[gi] = v
        return swapped

    def plan(self, changed: np.ndarray, swapped: set[int]) -> ScorePlan:
        """Which rows each group rescores: those whose model inputs changed, or all after a model swap.

        ``changed``: rows x groups (``all`` last), whether that group's features changed.
        """
        n = len(changed)
        plan = []
        for gi, scorer in self.models.scorers.items():
            force = gi in swapped
            idx = np.arange(n) if force else np.flatnonzero(changed[:, scorer.input_groups].any(axis=1))
            if idx.size:
                plan.append((scorer, idx, force))
        return plan

    def start(self, rows: np.ndarray, changed: np.ndarray, swapped: set[int]) -> PendingScores:
        """Plan the batch and start its predictions in the scoring thread (``rows`` must not change meanwhile)."""
        plan = self.plan(changed, swapped)
        return PendingScores(plan, self._thread().submit(self.predict, rows, plan, self.models.forest))

    def _thread(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="propstream-scoring")
        return self._pool

    @staticmethod
    def predict(rows: np.ndarray, plan: ScorePlan, forest: GroupForest | None = None) -> list[np.ndarray]:
        """One ``inplace_predict`` for every affected group (``forest``), else one per group: the same scores."""
        if forest is not None and forest.serves(plan):
            return forest.score(rows, plan)
        return [scorer.score(rows, idx) for scorer, idx, _ in plan]

    def finish(
        self,
        pending: PendingScores,
        users: list[str],
        seqs: list[int],
        clock: int,
        last_scores: LastScores,
        cols: ScoreColumns,
    ) -> None:
        """Wait for the predictions; add to ``cols`` only scores that moved (all after a swap); remember them.

        ``last_scores``: customer -> last written score per group (NaN: none),
        the shard's; updated for every one of ``users``. Rows are versioned by
        ``clock`` and the customer's sequence (``seqs``).
        """
        predictions = pending.predictions.result()
        last = last_scores.take(users, self.n_groups)
        versions = [row_version(clock, q) for q in seqs]
        cols.as_of = clock
        for (scorer, idx, force), probs in zip(pending.plan, predictions, strict=True):
            gi = scorer.group_index
            if not force:
                moved = probs != last[idx, gi]
                idx, probs = idx[moved], probs[moved]
            last[idx, gi] = probs
            group = self.group_names[gi]
            ii = idx.tolist()
            cols.user_id += [users[i] for i in ii]
            cols.group_id += [group] * len(ii)
            cols.score += probs.tolist()
            cols.model_version += [scorer.version] * len(ii)
            cols.version += [versions[i] for i in ii]
        last_scores.put(users, last)
