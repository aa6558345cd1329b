"""Every group's production booster joined into one: a shard's rows are scored for all groups in one call.

A shard refresh scores the same rows with each group's model. One XGBoost
``inplace_predict`` costs ~200 µs before its first tree (the Python wrapper,
its JSON arguments, the output it wraps; BENCHMARKS.md 6l), so 25 calls cost
more than the trees of a live refresh of a few hundred rows. ``GroupForest``
joins the boosters into one multi-output model (XGBoost's
``one_output_per_tree``: each tree adds to one output): each group's trees in
their own order, their split features renumbered from the model's inputs to
positions in the dense feature row, output k starting from group k's base
score. Every output adds the same leaves in the same order as the group's own
booster, so the raw scores are the same, bit for bit
(tests/models/test_forest.py); calibration is the group's, as before.

Only gradient-boosted trees of one objective, with numeric splits and one
value per leaf, can be joined; ``GroupForest.build`` returns None otherwise
(with the reason, logged) and the caller scores group by group.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import xgboost as xgb

    from models.scorer import GroupScorer

log = logging.getLogger(__name__)

# What a shard batch scores: per group, (its scorer, the rows it scores, whether a model swap forced them all).
ScorePlan = list[tuple["GroupScorer", np.ndarray, bool]]


@dataclass(frozen=True)
class GroupForest:
    """The boosters of ``members`` as one model over the dense feature row (one output per member)."""

    booster: xgb.Booster
    members: dict[int, GroupScorer]  # group index -> the scorer joined (its output: its place in this dict)
    outputs: dict[int, int]  # group index -> output column

    @classmethod
    def build(cls, scorers: Sequence[GroupScorer], width: int, threads: int = 1) -> GroupForest | None:
        """Join ``scorers``' boosters over a dense row of ``width`` features; None if they cannot be joined."""
        import xgboost as xgb  # here, not at import: xgboost imports scikit-learn (~1.5 s per command)

        if not scorers:
            return None
        models = [json.loads(bytes(s.artifact.booster.save_raw("json"))) for s in scorers]
        why = _cannot_join(models, scorers, width)
        if why is not None:
            log.info("scoring group by group, one predict call each: %s", why)
            return None
        trees = [_renumbered(m, s.positions, width) for m, s in zip(models, scorers, strict=True)]
        joined = models[0]
        learner = joined["learner"]
        params = learner["learner_model_param"]
        params["base_score"] = "[" + ",".join(_base_score(m) for m in models) + "]"
        params["num_feature"] = str(width)
        params["num_target"] = str(len(scorers))
        learner["feature_names"], learner["feature_types"] = [], []
        learner["attributes"] = {}  # a member's best_iteration is not the joined model's
        gbtree = learner["gradient_booster"]["model"]
        # Round by round, one tree per member that has one: each output's trees stay in their order.
        order: list[dict[str, Any]] = []
        info, indptr = [], [0]
        for r in range(max(len(t) for t in trees)):
            for k, member in enumerate(trees):
                if r < len(member):
                    tree = member[r]
                    tree["id"] = len(order)
                    order.append(tree)
                    info.append(k)
            indptr.append(len(order))
        gbtree["trees"], gbtree["tree_info"], gbtree["iteration_indptr"] = order, info, indptr
        gbtree["gbtree_model_param"]["num_trees"] = str(len(order))
        booster = xgb.Booster()
        try:
            booster.load_model(bytearray(json.dumps(joined).encode()))
        except xgb.core.XGBoostError as exc:  # a model layout this XGBoost does not take as one: keep serving
            log.warning("scoring group by group, one predict call each: XGBoost refused the joined model: %s", exc)
            return None
        booster.set_param({"nthread": threads})
        members = {s.group_index: s for s in scorers}
        return cls(booster, members, {gi: k for k, gi in enumerate(members)})

    def serves(self, plan: ScorePlan) -> bool:
        """Whether every scorer of ``plan`` is one this forest joined (not a model swapped in since)."""
        return all(self.members.get(scorer.group_index) is scorer for scorer, _, _ in plan)

    def score(self, rows: np.ndarray, plan: ScorePlan) -> list[np.ndarray]:
        """Calibrated probabilities of each ``plan`` entry's rows: one predict call for the rows any entry scores.

        The same as ``[scorer.score(rows, idx) for scorer, idx, _ in plan]``.
        """
        if not plan:
            return []
        wanted = np.zeros(len(rows), dtype=bool)
        for _, idx, _ in plan:
            wanted[idx] = True
        if wanted.all():  # live, every changed customer is rescored for every group: no copy
            x, at = rows, None
        else:
            x, at = rows[wanted], np.cumsum(wanted) - 1  # row of the batch -> row of x
        raw = self.booster.inplace_predict(x, validate_features=False).reshape(len(x), -1)
        out = []
        for scorer, idx, _ in plan:
            col = raw[idx if at is None else at[idx], self.outputs[scorer.group_index]]
            out.append(scorer.artifact.calibrate(np.asarray(col, dtype=np.float64)))
        return out


def _cannot_join(models: list[dict[str, Any]], scorers: Sequence[GroupScorer], width: int) -> str | None:
    """Why these boosters (as XGBoost JSON) cannot be one model, or None."""
    objective = models[0]["learner"]["objective"]
    for m, s in zip(models, scorers, strict=True):
        learner = m["learner"]
        name = f"model {s.artifact.card.group_id} v{s.version}"
        params = learner["learner_model_param"]
        if learner["gradient_booster"]["name"] != "gbtree":
            return f"{name} is a {learner['gradient_booster']['name']} booster, not gbtree"
        if learner["objective"] != objective:
            return f"{name}'s objective {learner['objective']['name']} is not {objective['name']}"
        if params.get("num_target", "1") != "1" or params.get("num_class", "0") != "0":
            return f"{name} has more than one output"
        gbtree = learner["gradient_booster"]["model"]
        if gbtree["gbtree_model_param"].get("num_parallel_tree", "1") != "1":
            return f"{name} grows parallel trees"
        for tree in gbtree["trees"]:
            if any(tree.get("split_type", ())) or tree["tree_param"].get("size_leaf_vector", "1") not in ("0", "1"):
                return f"{name} has categorical splits or vector leaves"
        if int(params["num_feature"]) != len(s.positions):
            return f"{name} reads {params['num_feature']} features, its card {len(s.positions)}"
        if s.positions.size and int(s.positions.max()) >= width:  # XGBoost would read past the row
            return f"{name} reads position {int(s.positions.max())} of a {width}-feature row"
    return None


def _base_score(model: dict[str, Any]) -> str:
    """A one-output model's base score as XGBoost wrote it (``[3.97E-1]`` since 3.1, ``3.97E-1`` before)."""
    return model["learner"]["learner_model_param"]["base_score"].strip("[]")


def _renumbered(model: dict[str, Any], positions: np.ndarray, width: int) -> list[dict[str, Any]]:
    """The model's trees with split features moved from its inputs to ``positions`` of a ``width``-wide row."""
    pos = positions.tolist()
    trees = model["learner"]["gradient_booster"]["model"]["trees"]
    for tree in trees:
        # a leaf (no left child) keeps its index: it splits nothing
        tree["split_indices"] = [
            pos[f] if left != -1 else f for f, left in zip(tree["split_indices"], tree["left_children"], strict=True)
        ]
        tree["tree_param"]["num_feature"] = str(width)
    return trees
