"""Scoring a batch: which groups rescore, in the scoring thread, and only scores that moved are written."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from schemas.tables import row_version
from stream.roster import CustomerRoster
from stream.scoring import ScoreColumns, ShardScoring

GROUPS = ("coffee", "tea")  # group indices 0, 1; ``all`` is 2
CLOCK = 1_500_000_000_000


@dataclass
class FakeScorer:
    """A group's model whose score is one column of the feature row; records where and what it scored."""

    group_index: int
    version: int
    input_groups: np.ndarray
    column: int
    calls: list = field(default_factory=list)

    def score(self, rows: np.ndarray, which: np.ndarray) -> np.ndarray:
        self.calls.append((threading.current_thread().name, which.tolist()))
        return rows[which, self.column].copy()


class FakeModels:
    """Production models as the registry says; ``promote`` stands for a newly promoted version."""

    def __init__(self, columns: tuple[int, int] = (0, 1)) -> None:
        self.scorers = {
            0: FakeScorer(0, 1, np.array([0, 2]), column=columns[0]),
            1: FakeScorer(1, 1, np.array([1, 2]), column=columns[1]),
        }
        self.polls = 0
        self.forest = None  # scored group by group (the forest is tests/models/test_forest.py's)

    def refresh(self) -> None:
        self.polls += 1

    def versions(self) -> dict[int, int]:
        return {gi: s.version for gi, s in self.scorers.items()}

    def promote(self, gi: int) -> None:
        s = self.scorers[gi]
        self.scorers[gi] = FakeScorer(gi, s.version + 1, s.input_groups, s.column)


def score(scoring, used, last, rows, changed, users=("u1", "u2", "u3"), seqs=(1, 2, 3), rewrite=False):
    """One batch through ShardScoring as the shard runs it; the score rows written."""
    swapped = scoring.swapped(used, rewrite)
    pending = scoring.start(np.array(rows, dtype=float), np.array(changed, dtype=bool), swapped)
    cols = ScoreColumns()
    scoring.finish(pending, list(users), list(seqs), CLOCK, last, cols)
    return cols


def rows_of(cols: ScoreColumns) -> set[tuple[str, str, float, int]]:
    return set(zip(cols.user_id, cols.group_id, cols.score, cols.model_version, strict=True))


def test_a_group_rescores_only_rows_whose_model_inputs_changed():
    models = FakeModels()
    scoring = ShardScoring(models, GROUPS)
    changed = np.array([[True, False, False], [False, True, False], [False, False, True], [False] * 3])
    plan = scoring.plan(changed, swapped=set())
    assert [(s.group_index, idx.tolist(), force) for s, idx, force in plan] == [(0, [0, 2], False), (1, [1, 2], False)]
    plan = scoring.plan(changed, swapped={1})  # a new model scores every row
    assert [(s.group_index, idx.tolist(), force) for s, idx, force in plan] == [
        (0, [0, 2], False),
        (1, [0, 1, 2, 3], True),
    ]
    assert scoring.plan(np.zeros((3, 3), dtype=bool), set()) == []  # nothing changed: no predict call


def test_only_scores_that_moved_are_written_except_after_a_model_swap():
    models = FakeModels()
    scoring = ShardScoring(models, GROUPS)
    used: dict[int, int] = {}
    last = CustomerRoster()
    rows = [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]
    everything = [[True, True, True]] * 3
    first = score(scoring, used, last, rows, everything)  # first models of the shard: all written
    users = ["u1", "u2", "u3"]
    assert rows_of(first) == {(u, g, r[gi], 1) for u, r in zip(users, rows, strict=True) for gi, g in enumerate(GROUPS)}
    assert len(score(scoring, used, last, rows, everything)) == 0  # rescored, nothing moved
    moved = [[0.1, 0.2], [0.3, 0.45], [0.5, 0.6]]
    assert rows_of(score(scoring, used, last, moved, everything)) == {("u2", "tea", 0.45, 1)}
    models.promote(0)
    after_swap = score(scoring, used, last, moved, [[False] * 3] * 3)  # no feature changed, the model did
    assert rows_of(after_swap) == {("u1", "coffee", 0.1, 2), ("u2", "coffee", 0.3, 2), ("u3", "coffee", 0.5, 2)}
    assert used == {0: 2, 1: 1}
    assert models.polls == 4  # the registry is polled once per batch


def test_a_rewrite_writes_every_score_even_unmoved():
    scoring = ShardScoring(FakeModels(), GROUPS)
    used: dict[int, int] = {}
    last = CustomerRoster()
    rows = [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]
    score(scoring, used, last, rows, [[True] * 3] * 3)
    assert len(score(scoring, used, last, rows, [[False] * 3] * 3, rewrite=True)) == 6


def test_score_rows_are_versioned_by_clock_and_customer_sequence_and_remembered():
    scoring = ShardScoring(FakeModels(), GROUPS)
    last = CustomerRoster()
    changed = [[True, False, False], [False, False, False], [False, False, False]]
    used = {0: 1, 1: 1}  # the shard already uses these models
    cols = score(scoring, used, last, [[0.7, 0.8], [0.1, 0.1], [0.2, 0.2]], changed, seqs=(5, 6, 7))
    assert (cols.as_of, cols.user_id, cols.group_id, cols.version) == (
        CLOCK,
        ["u1"],
        ["coffee"],
        [row_version(CLOCK, 5)],
    )
    u1 = last.last_scores("u1")
    assert u1 is not None and u1.tolist()[0] == 0.7 and np.isnan(u1[1])  # tea never scored for u1
    assert "u2" in last and last.last_scores("u2") is None  # remembered: nothing written yet


def test_predictions_run_in_the_scoring_thread():
    models = FakeModels()
    scoring = ShardScoring(models, GROUPS)
    score(scoring, {}, CustomerRoster(), [[0.1, 0.2]] * 3, [[True] * 3] * 3)
    (name,) = {name for s in models.scorers.values() for name, _ in s.calls}
    assert name.startswith("propstream-scoring") and name != threading.current_thread().name
