"""Model lifecycle commands: list, show, promote, rollback; the ``models`` table kept in step with the registry.

The registry's files are the truth a running stream polls (``PRODUCTION``)
and the record of every pointer move (``actions.jsonl``: who, why, when).
The ``models`` table mirrors them for SQL. An embedded chDB store can be open
in one process only, so while a stream runs on it a command cannot write
the table: the pointer still moves (the stream polls it and rescores every
customer of the group itself), the log keeps the record, and the table is
synced from the log by the stream when it swaps the model, or else by the
next command that opens the store (``sync_models_table``). With a ClickHouse
server both happen at once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from models.registry import ModelRegistry, RegistryAction
from offline_train.slices import stored_threshold_report
from offline_train.thresholds import ThresholdReport, format_report
from schemas.cards import ModelCard
from schemas.errors import PropstreamError
from schemas.settings import Settings
from schemas.tables import MODELS
from stream.sinks.clickhouse import ClickHouseUnavailableError

Progress = Callable[[str], None]


class LifecycleError(PropstreamError):
    """A model lifecycle command cannot be done as asked (unknown group or version)."""


def registry_groups(registry: ModelRegistry) -> list[str]:
    """Groups with at least one registered version."""
    if not registry.root.is_dir():
        return []
    return sorted(p.name for p in registry.root.iterdir() if p.is_dir() and registry.versions(p.name))


def _ms(t: datetime | None) -> int | None:
    return None if t is None else int(t.timestamp() * 1000)


def sync_models_table(
    client: Any, database: str, registry: ModelRegistry, groups: list[str] | None = None, new: Sequence[ModelCard] = ()
) -> int:
    """Write the ``models`` rows that differ from the registry (stage, last action) or are ``new``; rows written."""
    groups = sorted(groups if groups is not None else registry_groups(registry))
    if not groups:
        return 0
    stored = {
        (g, int(v)): (stage, by, why, at)
        for g, v, stage, by, why, at in client.query(
            f"SELECT group_id, version, stage, changed_by, change_reason, toUnixTimestamp64Milli(changed_at) "
            f"FROM {MODELS.at(database)} FINAL WHERE group_id IN {{groups:Array(String)}}",
            parameters={"groups": groups},
        ).result_rows
    }
    fresh = {(c.group_id, c.version): c for c in new}
    now = datetime.now(tz=UTC)
    rows = []
    for g in groups:
        for v in registry.versions(g):
            stage = registry.stage(g, v).value
            act = registry.last_action(g, v)
            at = datetime.fromisoformat(act.at) if act else None
            want = (stage, act.by if act else "", act.reason if act else "", _ms(at))
            if (g, v) in fresh or stored.get((g, v)) != want:
                c = fresh.get((g, v)) or registry.card(g, v)
                card = [json.dumps(c.metrics), c.model_dump_json(), c.created_at]
                rows.append([g, v, stage, *card, now, *want[1:3], at])
    if rows:
        client.insert(MODELS.at(database), rows, column_names=list(MODELS.inserted))
    return len(rows)


@dataclass
class ModelRow:
    """One registered version as `propstream models list` shows it."""

    group_id: str
    version: int
    stage: str
    roc_auc: float | None
    ece: float | None
    created_at: str
    changed_by: str
    change_reason: str
    changed_at: str


def list_models(registry: ModelRegistry, group: str | None = None) -> list[ModelRow]:
    """Every registered version (of ``group``), from the registry's files (readable while a stream runs)."""
    groups = [group] if group else registry_groups(registry)
    if group and not registry.versions(group):
        msg = f"no model of group {group!r} in {registry.root}; groups with models: {registry_groups(registry)}"
        raise LifecycleError(msg)
    out = []
    for g in groups:
        for v in registry.versions(g):
            card = registry.card(g, v)
            act = registry.last_action(g, v)
            out.append(
                ModelRow(
                    g,
                    v,
                    registry.stage(g, v).value,
                    card.metrics.get("roc_auc"),
                    card.metrics.get("ece"),
                    card.created_at.isoformat(timespec="seconds"),
                    act.by if act else "",
                    act.reason if act else "",
                    act.at if act else "",
                )
            )
    return out


@dataclass
class PointerMove:
    """What `propstream models promote` / `rollback` did."""

    action: RegistryAction
    store: str  # "synced" | "held": the store could not be opened (a running stream holds it)
    rescored_customers: int = 0
    report: ThresholdReport | None = None
    notes: list[str] = field(default_factory=list)


def _after_move(settings: Settings, registry: ModelRegistry, done: RegistryAction, progress: Progress) -> PointerMove:
    """Sync the table, report thresholds, rescore in bulk when the store opens; else say the stream will."""
    from propstream import app

    move = PointerMove(done, "synced")
    try:
        client = app.client_for(settings)
    except ClickHouseUnavailableError as exc:
        move.store = "held"
        move.notes.append(
            f"the store cannot be opened ({exc}); a running stream rescores every customer of {done.group_id} "
            f"within stream.model_poll_seconds ({settings.stream.model_poll_seconds:g} s) of this change, and the "
            f"models table is synced from {registry.root / 'actions.jsonl'} by that stream "
            "(or the next command that opens the store)"
        )
        # The thresholds report needs no store: the new model's test slice was saved with it by `train`.
        move.report = stored_threshold_report(registry, done.group_id, done.version, done.previous)
        for line in format_report(move.report) if move.report is not None else []:
            progress(line)
        return move
    db = settings.clickhouse.database
    sync_models_table(client, db, registry, [done.group_id])
    move.report = promotion_report(settings, registry, done, progress)
    result = app.rescore(settings, progress)
    move.rescored_customers = result.customers
    return move


def promotion_report(
    settings: Settings, registry: ModelRegistry, done: RegistryAction, progress: Progress
) -> ThresholdReport | None:
    """Old vs new model on the new model's test slice, replayed from the events archive (None: no slice or events)."""
    from offline_train.dataset import build_examples
    from offline_train.train import slice_threshold_report
    from propstream import app
    from stream.state import StateConfig

    new = registry.load(done.group_id, done.version)
    at = new.card.test_cutoff
    if at is None:
        return None
    records = app.read_archive(settings)
    if not records:
        return None
    catalog = app.load_catalog(settings)
    spec = app.feature_spec(catalog, settings.events.types)
    t = settings.train
    ex = build_examples(records, StateConfig.build(spec), catalog, [at], t.label_horizon_days, t.label_types)
    old = registry.load(done.group_id, done.previous) if done.previous is not None else None
    report = slice_threshold_report(spec, ex, at, new, old)
    for line in format_report(report):
        progress(line)
    return report


def promote(
    settings: Settings, group: str, version: int, by: str | None, reason: str, progress: Progress
) -> PointerMove:
    """Make ``version`` production (the stream picks it up), record who and why, then sync, report and rescore."""
    registry = ModelRegistry(settings.models_dir)
    return _after_move(settings, registry, registry.promote(group, version, by, reason), progress)


def rollback(settings: Settings, group: str, by: str | None, reason: str, progress: Progress) -> PointerMove:
    """Make the previous production version production again; as ``promote`` otherwise."""
    registry = ModelRegistry(settings.models_dir)
    return _after_move(settings, registry, registry.rollback(group, by, reason), progress)
