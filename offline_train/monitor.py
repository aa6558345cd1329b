"""Model monitoring from the store: drift events and live calibration per group (``propstream monitor``).

Reads ``score_history`` (every served score) and the label events of the
events archive, computes per group (``offline_train.drift``):

- ``score`` drift: a river detector over the mean served score per bucket;
- ``outcome`` drift: the same over the realised rate of matured scores (a
  label event in the group within ``train.label_horizon_days`` after the
  score's as-of; only scores at least that old);
- live calibration: predicted vs realised per probability decile and ECE over
  rolling windows of matured scores;

and writes them to ``drift_events`` and ``live_calibration``. "Now" is the
newest event of the archive (event time), so the same store gives the same
rows, and a replay of history monitors as the live stream would have.

Which groups are due for retraining (``due_for_retraining``): those with a
drift event known after the last data their production model saw (its test
cutoff plus the label horizon).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from models.registry import ModelRegistry
from offline_train.drift import CalibrationWindow, calibration_windows, detect, matured_labels
from schemas.features import DAY_MS
from schemas.groups import GroupCatalog
from schemas.settings import MonitorSettings, TrainSettings
from schemas.tables import DRIFT_EVENTS, EVENTS, LIVE_CALIBRATION, SCORE_HISTORY


@dataclass(frozen=True)
class DriftEvent:
    """One detector alarm of one group (a row of ``drift_events``)."""

    group_id: str
    signal: str  # "score" or "outcome"
    detector: str
    bucket: datetime
    known_at: datetime
    value: float
    rows: int
    estimate: float


@dataclass
class MonitorReport:
    """What one monitoring pass found."""

    now: datetime | None
    matured_until: datetime | None
    drift: list[DriftEvent] = field(default_factory=list)
    calibration: dict[str, list[CalibrationWindow]] = field(default_factory=dict)
    retrained: list[str] = field(default_factory=list)


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _label_events(
    client: Any, database: str, catalog: GroupCatalog, label_types: tuple[str, ...], codes: dict[str, int]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per group (catalog order): (user codes, ms) of its label events."""
    rows = client.query(
        f"SELECT user_id, item_id, toUnixTimestamp64Milli(ts) FROM {EVENTS.at(database)} FINAL "
        "WHERE type IN {types:Array(String)}",
        parameters={"types": list(label_types)},
    ).result_rows
    per: list[tuple[list[int], list[int]]] = [([], []) for _ in catalog.groups]
    for user, item, ts in rows:
        code = codes.setdefault(user, len(codes))
        for g in catalog.groups_of(item)[:-1]:  # the last index is `all`
            per[g][0].append(code)
            per[g][1].append(int(ts))
    return [(np.array(u, dtype=np.int64), np.array(t, dtype=np.int64)) for u, t in per]


def _scores(client: Any, database: str, group: str, since_ms: int | None) -> list[tuple[str, float, int]]:
    where = "group_id = {group:String}"
    if since_ms is not None:
        where += " AND as_of >= fromUnixTimestamp64Milli({since:Int64})"
    return client.query(
        f"SELECT user_id, score, toUnixTimestamp64Milli(as_of) FROM {SCORE_HISTORY.at(database)} FINAL "
        f"WHERE {where} ORDER BY as_of, user_id, model_version",
        parameters={"group": group, **({} if since_ms is None else {"since": since_ms})},
    ).result_rows


def newest_event_ms(client: Any, database: str) -> int | None:
    """Event time of the newest archived event: the monitor's "now"."""
    sql = f"SELECT count(), toUnixTimestamp64Milli(max(ts)) FROM {EVENTS.at(database)}"
    ((n, newest),) = client.query(sql).result_rows
    return int(newest) if n else None


def monitor_groups(
    client: Any,
    database: str,
    catalog: GroupCatalog,
    groups: list[str],
    cfg: MonitorSettings,
    train: TrainSettings,
    since: datetime | None = None,
) -> MonitorReport:
    """Drift events and live calibration of ``groups`` from the store (nothing written)."""
    now_ms = newest_event_ms(client, database)
    if now_ms is None:
        return MonitorReport(None, None)
    horizon_ms = train.label_horizon_days * DAY_MS
    bucket_ms = cfg.bucket_days * DAY_MS
    mature_ms = now_ms - horizon_ms
    codes: dict[str, int] = {}
    labels_of = _label_events(client, database, catalog, train.label_types, codes)
    index = {g.name: i for i, g in enumerate(catalog.groups)}
    report = MonitorReport(_at(now_ms), _at(mature_ms))
    since_ms = None if since is None else int(since.timestamp() * 1000)
    for group in groups:
        rows = _scores(client, database, group, since_ms)
        if not rows:
            continue
        users = np.array([codes.setdefault(u, len(codes)) for u, _, _ in rows], dtype=np.int64)
        score = np.array([s for _, s, _ in rows], dtype=np.float64)
        ms = np.array([t for _, _, t in rows], dtype=np.int64)
        for d in detect(ms, score, bucket_ms, cfg.detector, cfg.delta, cfg.threshold):
            known = d.bucket_ms + bucket_ms
            report.drift.append(
                DriftEvent(group, "score", cfg.detector, _at(d.bucket_ms), _at(known), d.value, d.rows, d.estimate)
            )
        matured = ms <= mature_ms
        if not matured.any():
            continue
        buy_users, buy_ms = labels_of[index[group]]
        y = matured_labels(users[matured], ms[matured], buy_users, buy_ms, horizon_ms)
        for d in detect(ms[matured], y.astype(np.float64), bucket_ms, cfg.detector, cfg.delta, cfg.threshold):
            known = d.bucket_ms + bucket_ms + horizon_ms
            report.drift.append(
                DriftEvent(group, "outcome", cfg.detector, _at(d.bucket_ms), _at(known), d.value, d.rows, d.estimate)
            )
        report.calibration[group] = calibration_windows(
            ms[matured],
            score[matured],
            y,
            int(ms.min()),
            mature_ms,
            cfg.calibration_window_days * DAY_MS,
            cfg.calibration_step_days * DAY_MS,
        )
    return report


def write_report(client: Any, database: str, report: MonitorReport, window_days: int) -> None:
    """Insert the report's rows (ReplacingMergeTree keys: a second pass over the same store replaces them)."""
    if report.drift:
        client.insert(
            DRIFT_EVENTS.at(database),
            [[getattr(e, c) for c in DRIFT_EVENTS.inserted] for e in report.drift],
            column_names=list(DRIFT_EVENTS.inserted),
        )
    rows = [
        [group, _at(w.end_ms), window_days, b, pred, obs, n, w.ece]
        for group, windows in report.calibration.items()
        for w in windows
        for b, pred, obs, n in w.bins
    ]
    if rows:
        client.insert(LIVE_CALIBRATION.at(database), rows, column_names=list(LIVE_CALIBRATION.inserted))


def model_data_end(registry: ModelRegistry, group: str, horizon_days: int) -> datetime | None:
    """The last event time the group's production model learnt or was judged from; None without a model."""
    version = registry.production_version(group)
    if version is None:
        return None
    card = registry.card(group, version)
    last = card.test_cutoff or (card.calibration_cutoffs[-1] if card.calibration_cutoffs else None)
    return None if last is None else last + timedelta(days=horizon_days)


def due_for_retraining(report: MonitorReport, registry: ModelRegistry, horizon_days: int) -> list[str]:
    """Groups with a drift event known after their production model's data (a group without a model is not due)."""
    due = []
    for group in sorted({e.group_id for e in report.drift}):
        end = model_data_end(registry, group, horizon_days)
        if end is not None and any(e.known_at > end for e in report.drift if e.group_id == group):
            due.append(group)
    return due
