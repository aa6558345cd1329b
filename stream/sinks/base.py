"""The sink interface: shard outputs become column-oriented rows per table."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from schemas.events import DeadLetter, FeatureRow, ItemActivityRow
from schemas.tables import CUSTOMER_FEATURES, DEAD_LETTERS, EVENTS, ITEM_ACTIVITY, SCORE_TABLES, SCORES, TRENDING
from stream.gcpolicy import Pauses
from stream.rows import FeatureMaps
from stream.shard import ShardOutput
from stream.trending import TrendRow

ColumnValues = list | FeatureMaps  # FeatureMaps: customer_features' Map column, kept as arrays
TableRows = dict[str, dict[str, Any]]  # table -> column -> values (ColumnValues: each joins its kind with +=)


class TableWriter(ABC):
    """Inserts column-oriented rows into named tables."""

    @abstractmethod
    def insert(self, table: str, columns: dict[str, ColumnValues]) -> None:
        """Insert one batch of rows given as columns of equal length."""


def table_rows(outputs: list[ShardOutput], type_names: tuple[str, ...]) -> TableRows:
    """Merge shard outputs into one column-oriented batch per table.

    ``type_names`` (the vocabulary's names, ``StateConfig.type_names``) names
    the type index of each applied event.

    Dead letters leave the dataflow by their own stream (``dead_letter_rows``):
    the ones a shard found ride in ``ShardOutput.dead_letters`` only until the
    dataflow splits them into that stream, so this ignores them.

    Timestamps stay integers (DateTime64(3) takes epoch milliseconds,
    DateTime epoch seconds): no datetime objects on the hot path.
    """
    t: TableRows = {}

    def cols(table: str, *names: str) -> list[list]:
        d = t.setdefault(table, {n: [] for n in names})
        return [d[n] for n in names]

    for out in outputs:
        if out.applied:
            u, i, ty, ts, eid, q, v, src = cols(EVENTS.name, *EVENTS.inserted)
            users, items, types, times, ids, quantities, cents, sources = zip(*out.applied, strict=True)
            u += users
            i += items
            ty += [type_names[x] for x in types]
            ts += times
            eid += ids
            q += quantities
            v += [c / 100 for c in cents]
            src += sources
        fc = out.features
        if len(fc):
            d = t.setdefault(
                CUSTOMER_FEATURES.name, {n: FeatureMaps() if n == "features" else [] for n in FeatureRow._fields}
            )
            d["user_id"] += fc.user_id
            d["as_of"] += [fc.as_of] * len(fc)
            d["features"] += fc.features
            d["version"] += fc.version
        sc = out.scores
        if len(sc):
            for table in SCORE_TABLES:
                u, g, s, mv, asof, ver = cols(table.name, *SCORES.inserted)
                u += sc.user_id
                g += sc.group_id
                s += sc.score
                mv += sc.model_version
                asof += [sc.as_of] * len(sc)
                ver += sc.version
        ic = out.item_activity
        if len(ic):
            h, it, ty, sh, n, q, v = cols(ITEM_ACTIVITY.name, *ItemActivityRow._fields)
            h += [hour // 1000 for hour in ic.hour]
            it += ic.item_id
            ty += ic.type
            sh += [ic.shard] * len(ic)
            n += ic.events
            q += ic.quantity
            v += ic.value
    return t


def trending_rows(rows: list[TrendRow]) -> TableRows:
    """One column-oriented batch for the ``trending`` table (window ends in seconds: DateTime)."""
    if not rows:
        return {}
    columns = {name: list(values) for name, values in zip(TrendRow._fields, zip(*rows, strict=True), strict=True)}
    columns["window_end"] = [end // 1000 for end in columns["window_end"]]
    return {TRENDING.name: {name: columns[name] for name in TRENDING.inserted}}


def dead_letter_rows(letters: list[DeadLetter], received_at: datetime) -> TableRows:
    """One column-oriented batch for the ``dead_letters`` table, stamped with the time received."""
    if not letters:
        return {}
    columns = {name: list(values) for name, values in zip(DeadLetter._fields, zip(*letters, strict=True), strict=True)}
    columns["received_at"] = [int(received_at.timestamp() * 1000)] * len(letters)
    return {DEAD_LETTERS.name: columns}


# Edges (ms) of the event-to-visible lag histogram: 0, then 20 log-spaced bins per decade from 1 ms to a day.
LAG_EDGES_MS = np.concatenate([[0.0], np.geomspace(1, 86_400_000, 159)])


class VisibleLag:
    """Event-to-visible lag: from an event's time to the moment its rows were written (a histogram).

    Live, events are stamped when they happen, so this is the freshness a
    reader of ClickHouse sees; in a replay of old events it is their age.
    Quantiles are read off the histogram (the upper edge of the bin, ~12 %
    resolution); counting is one vectorised pass per write.

    >>> lag = VisibleLag()
    >>> lag.add([1_000, 1_900, 1_990], now_ms=2_000)
    >>> lag.quantile(0.5) >= 100 > lag.quantile(0.3), lag.max_ms
    (True, 1000)
    """

    def __init__(self) -> None:
        self.counts = np.zeros(len(LAG_EDGES_MS) + 1, dtype=np.int64)
        self.max_ms = 0

    def add(self, event_ms: list[int], now_ms: int) -> None:
        """Count events of the given times written at ``now_ms``."""
        if not event_ms:
            return
        lag = now_ms - np.asarray(event_ms, dtype=np.int64)
        self.counts += np.bincount(np.searchsorted(LAG_EDGES_MS, lag, side="right"), minlength=len(self.counts))
        self.max_ms = max(self.max_ms, int(lag.max()))

    def quantile(self, q: float) -> float | None:
        """The lag (ms) below which a fraction ``q`` of events were visible; None before any event."""
        total = int(self.counts.sum())
        if not total:
            return None
        k = int(np.searchsorted(np.cumsum(self.counts), q * total, side="left"))
        return float(LAG_EDGES_MS[min(k, len(LAG_EDGES_MS) - 1)]) if k < len(LAG_EDGES_MS) else float(self.max_ms)

    def summary(self) -> dict[str, float | None]:
        """p50, p99 and max in seconds."""
        p50, p99 = self.quantile(0.5), self.quantile(0.99)
        return {
            "p50_s": None if p50 is None else p50 / 1000,
            "p99_s": None if p99 is None else p99 / 1000,
            "max_s": self.max_ms / 1000 if p50 is not None else None,
        }


@dataclass
class RunStats:
    """Counters of one run, for progress lines, the summary and conservation checks."""

    events_in: int = 0
    applied: int = 0
    dead_letters: int = 0
    dropped: int = 0  # of a type the mapping drops on purpose
    score_rows: int = 0
    feature_rows: int = 0
    trending_rows: int = 0
    started: float = field(default_factory=time.perf_counter)
    last_report: float = 0.0
    first_write_at: float | None = None  # wall clock (time.time) of the first and last write of events
    last_write_at: float | None = None
    visible_lag: VisibleLag = field(default_factory=VisibleLag)  # event time -> rows written
    live: bool = False  # events stamped as they happen (wall clock): the lag is freshness, shown in progress lines
    gc_pauses: Pauses = field(default_factory=Pauses)  # the timed garbage collections (stream.gcpolicy)

    def add(self, outputs: list[ShardOutput]) -> None:
        """Count what a sink batch of shard outputs carries, once it is written."""
        if any(o.applied for o in outputs):
            self._wrote_events()
            self.visible_lag.add([r.ts_ms for o in outputs for r in o.applied], int(time.time() * 1000))
        for o in outputs:
            self.applied += len(o.applied)
            self.score_rows += len(o.scores)
            self.feature_rows += len(o.features)

    def add_trending(self, rows: list[TrendRow]) -> None:
        """Count a sink batch of trending rows."""
        self.trending_rows += len(rows)

    def add_dead_letters(self, letters: list[DeadLetter]) -> None:
        """Count a sink batch of dead letters."""
        if letters:
            self._wrote_events()
        self.dead_letters += len(letters)

    def _wrote_events(self) -> None:
        now = time.time()
        self.first_write_at = self.first_write_at or now
        self.last_write_at = now

    @property
    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.started

    def line(self) -> str:
        """One progress line."""
        rate = (self.applied + self.dead_letters + self.dropped) / max(self.elapsed, 1e-9)
        dropped = f"{self.dropped:,} dropped by the mapping, " if self.dropped else ""
        lag = self.visible_lag.summary()
        # in a replay the lag is the data's age (years for The Complete Journey): not worth a line
        visible = f", event to visible p99 {lag['p99_s']:,.3f} s" if self.live and lag["p99_s"] is not None else ""
        return (
            f"{self.applied:,} applied, {self.dead_letters:,} dead letters, {dropped}"
            f"{self.score_rows:,} score rows, {rate:,.0f} events/s{visible}"
        )
