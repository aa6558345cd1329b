"""Bulk rescore: after a promotion, score every customer's stored features with the new production models.

A running stream rescores every customer itself when it sees a promoted model.
This is for the time it does not run (a nightly retrain, a model promoted by
hand): without it, ``scores`` would hold scores of a model that is no longer in
production until the stream next starts.

A group is rescored when any of its rows in ``scores`` came from another model
version, or when customers in ``customer_features`` have no score for it (a
run without models). Rows are written as the stream would write them at its
last clock: as-of the newest ``customer_features`` or ``scores`` row, version
from that time and the customer's own sequence, so they replace the old rows
and a later stream update replaces them in turn. Scores can be newer than the
newest stored features: a live run without a recovery store writes
``customer_features`` every ``stream.sink_archive_flush_seconds`` and the
scores every ``stream.sink_flush_seconds``, so a kill -9 can lose the last
features of scores it wrote. The clock and each customer's sequence are
therefore the larger of both tables', and such a customer is rescored on the
features it has.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.scorer import ProductionModels
from schemas.tables import CUSTOMER_FEATURES, SCORE_TABLES, SCORES, VERSION_SHIFT, row_version
from stream.state import StateConfig

SCORE_COLUMNS = list(SCORES.inserted)


@dataclass
class RescoreResult:
    """What a bulk rescore did."""

    groups: list[str] = field(default_factory=list)
    customers: int = 0
    rows: int = 0


def _seq(version: int) -> int:
    """The per-customer sequence bits of a row version (``row_version``'s low bits)."""
    return int(version) & ((1 << VERSION_SHIFT) - 1)


def stale_groups(client: Any, database: str, models: ProductionModels) -> list[int]:
    """Indices of groups whose stored scores are not all from their production model."""
    n_customers = client.query(f"SELECT count() FROM {CUSTOMER_FEATURES.at(database)} FINAL").result_rows[0][0]
    stored: dict[str, dict[int, int]] = {}
    for group, version, n in client.query(
        f"SELECT group_id, model_version, count() FROM {SCORES.at(database)} FINAL GROUP BY group_id, model_version"
    ).result_rows:
        stored.setdefault(group, {})[int(version)] = int(n)
    stale = []
    for gi, scorer in sorted(models.scorers.items()):
        counts = stored.get(models.spec.groups[gi], {})
        if set(counts) - {scorer.version} or counts.get(scorer.version, 0) < n_customers:
            stale.append(gi)
    return stale


def bulk_rescore(
    client: Any,
    database: str,
    cfg: StateConfig,
    models: ProductionModels,
    page: int = 50_000,
    progress: Callable[[str], None] = print,
) -> RescoreResult:
    """Rescore the stale groups for every customer in ``customer_features``, ``page`` customers at a time."""
    result = RescoreResult()
    groups = stale_groups(client, database, models)
    if not groups:
        return result
    names = models.spec.groups
    result.groups = [names[gi] for gi in groups]
    features, scores = CUSTOMER_FEATURES.at(database), SCORES.at(database)
    clock = client.query(
        f"SELECT greatest((SELECT toUnixTimestamp64Milli(max(as_of)) FROM {features}), "
        f"(SELECT toUnixTimestamp64Milli(max(as_of)) FROM {scores}))"
    ).result_rows[0][0]
    index = cfg.spec.index
    last = ""
    while True:
        batch = client.query(
            f"SELECT user_id, features, version FROM {CUSTOMER_FEATURES.at(database)} FINAL "
            f"WHERE user_id > {{last:String}} ORDER BY user_id LIMIT {int(page)}",
            parameters={"last": last},
        ).result_rows
        if not batch:
            break
        rows = np.tile(cfg.new_row(), (len(batch), 1))
        for i, (_, feats, _) in enumerate(batch):
            for name, value in feats.items():
                rows[i, index[name]] = value
        users = [u for u, _, _ in batch]
        scored = dict(
            client.query(
                f"SELECT user_id, max(version) FROM {scores} WHERE user_id > {{last:String}} "
                "AND user_id <= {upto:String} GROUP BY user_id",
                parameters={"last": last, "upto": users[-1]},
            ).result_rows
        )
        # the sequence bits of the customer's newest row, features or scores
        versions = [row_version(clock, max(_seq(v), _seq(scored.get(u, 0)))) for u, _, v in batch]
        cols: dict[str, list] = {c: [] for c in SCORE_COLUMNS}
        for gi in groups:
            scorer = models.scorers[gi]
            cols["user_id"] += users
            cols["group_id"] += [names[gi]] * len(users)
            cols["score"] += scorer.score(rows).tolist()
            cols["model_version"] += [scorer.version] * len(users)
            cols["as_of"] += [clock] * len(users)
            cols["version"] += versions
        for table in SCORE_TABLES:
            client.insert(
                table.at(database),
                [cols[c] for c in SCORE_COLUMNS],
                column_names=SCORE_COLUMNS,
                column_oriented=True,
            )
        result.customers += len(batch)
        result.rows += len(cols["user_id"])
        last = users[-1]
        progress(f"  rescored {result.customers:,} customers ({result.rows:,} score rows)")
    return result
