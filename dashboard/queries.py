"""Every SQL query of the web dashboard, in one place; table and column names come from ``schemas.tables``.

The dashboard reads what the stream writes: ``trending`` (count vs forecast
per window end), ``scores FINAL`` (score histograms and segment sizes),
``events``, ``score_history`` and ``dead_letters`` (pipeline health) and
``models`` (model versions). Each method returns plain rows (tuples or small
dataclasses) that ``dashboard.app`` renders; times are formatted in SQL, in
UTC (chDB may drop the zone of a ``DateTime('UTC')`` column on the way out).

One client may be shared with a running stream (``propstream run`` with
``dashboard.in_run``): clickhouse-connect's chDB backend serialises calls on
a handle with its own lock, and this class takes one more, so that its own
queries from uvicorn's thread never interleave with each other.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from schemas.tables import DEAD_LETTERS, EVENTS, MODELS, SCORE_HISTORY, SCORES, TRENDING

TIME = "%Y-%m-%d %H:%i"  # ClickHouse formatDateTime pattern of every time the page shows (UTC)


@dataclass(frozen=True)
class TrendPoint:
    """One row of ``trending``: a series' count and forecast at a window end."""

    window_end: str
    type: str
    key: str
    count: int
    expected: float
    surge: float
    rank: int
    surge_rank: int


@dataclass(frozen=True)
class Freshness:
    """How long after its event time a group's current scores reached ClickHouse (``written_at - as_of``)."""

    group_id: str
    customers: int
    p50_s: float
    p95_s: float
    max_s: float
    last_as_of: str
    last_written: str


class DashboardQueries:
    """The dashboard's reads of one database, over a clickhouse-connect client (embedded chDB or a server)."""

    def __init__(self, client: Any, database: str, lock: threading.Lock | None = None):
        self.client = client
        self.database = database
        self._lock = lock or threading.Lock()

    def _rows(self, sql: str, **params: Any) -> list[tuple]:
        with self._lock:
            return list(self.client.query(sql, parameters=params or None).result_rows)

    def _t(self, table: Any) -> str:
        return str(table.at(self.database))

    # Trending

    def trend_series(self) -> list[tuple[str, str, str]]:
        """The (window, scope, type) combinations the trending table holds."""
        return [
            (str(w), str(s), str(t))
            for w, s, t in self._rows(f"SELECT DISTINCT window, scope, type FROM {self._t(TRENDING)} ORDER BY ALL")
        ]

    def window_end(self, window: str, at: int | None = None) -> int | None:
        """The last end (Unix seconds) of ``window`` at or before ``at`` (default: the latest); None if none."""
        before = "" if at is None else " AND window_end <= toDateTime({at:Int64}, 'UTC')"
        rows = self._rows(
            f"SELECT toUnixTimestamp(max(window_end)), count() FROM {self._t(TRENDING)} "
            f"WHERE window = {{window:String}}{before}",
            window=window,
            **({} if at is None else {"at": at}),
        )
        return int(rows[0][0]) if rows and rows[0][1] else None

    def top(self, window: str, scope: str, by: str, top: int, end: int) -> list[TrendPoint]:
        """The top ``top`` series per type at window end ``end``, by ``surge`` (surge_rank) or ``count`` (rank)."""
        rank = "surge_rank" if by == "surge" else "rank"
        rows = self._rows(
            f"SELECT formatDateTime(window_end, '{TIME}', 'UTC'), type, key, count, expected, surge, rank, surge_rank "
            f"FROM {self._t(TRENDING)} FINAL WHERE window = {{window:String}} AND scope = {{scope:String}} "
            f"AND {rank} BETWEEN 1 AND {{top:UInt32}} AND window_end = toDateTime({{end:Int64}}, 'UTC') "
            f"ORDER BY type, {rank}",
            window=window,
            scope=scope,
            top=top,
            end=end,
        )
        return [TrendPoint(*r) for r in rows]

    def history(
        self, window: str, scope: str, type_: str, keys: list[str], ends: int, until: int
    ) -> tuple[list[str], dict[str, dict[str, tuple[int, float]]]]:
        """The last ``ends`` ends of ``window`` up to ``until`` and, per key, its (count, expected) at each.

        ``trending`` keeps only each window end's top N, so a series has a
        point where it was among them (a gap elsewhere).
        """
        t = self._t(TRENDING)
        axis = self._rows(
            f"SELECT toUnixTimestamp(e), formatDateTime(e, '{TIME}', 'UTC') FROM (SELECT DISTINCT window_end AS e "
            f"FROM {t} WHERE window = {{window:String}} AND window_end <= toDateTime({{until:Int64}}, 'UTC') "
            "ORDER BY e DESC LIMIT {ends:UInt32}) ORDER BY e",
            window=window,
            until=until,
            ends=ends,
        )
        labels = [str(label) for _, label in axis]
        series: dict[str, dict[str, tuple[int, float]]] = {k: {} for k in keys}
        if not axis or not keys:
            return labels, series
        for end, key, count, expected in self._rows(
            f"SELECT formatDateTime(window_end, '{TIME}', 'UTC'), key, count, expected FROM {t} FINAL "
            "WHERE window = {window:String} AND scope = {scope:String} AND type = {type:String} "
            "AND key IN {keys:Array(String)} AND window_end BETWEEN toDateTime({first:Int64}, 'UTC') "
            "AND toDateTime({until:Int64}, 'UTC')",
            window=window,
            scope=scope,
            type=type_,
            keys=keys,
            first=int(axis[0][0]),
            until=until,
        ):
            series[str(key)][str(end)] = (int(count), float(expected))
        return labels, series

    # Scores

    def score_histograms(self, bins: int) -> dict[str, list[int]]:
        """Per group, customers per score bin ``[i/bins, (i+1)/bins)`` (a score of 1 in the last bin)."""
        out: dict[str, list[int]] = {}
        for group, b, n in self._rows(
            f"SELECT group_id, least(toUInt32(floor(score * {{bins:UInt32}})), {{bins:UInt32}} - 1) AS bin, count() "
            f"FROM {self._t(SCORES)} FINAL GROUP BY group_id, bin ORDER BY group_id, bin",
            bins=bins,
        ):
            out.setdefault(str(group), [0] * bins)[int(b)] = int(n)
        return out

    def segment_sizes(self, thresholds: tuple[float, ...]) -> dict[str, tuple[int, list[int]]]:
        """Per group: its scored customers and how many score at least each threshold."""
        return {
            str(g): (int(n), [int(x) for x in sizes])
            for g, n, sizes in self._rows(
                f"SELECT group_id, count(), sumForEach(arrayMap(t -> toUInt64(score >= t), {{th:Array(Float64)}})) "
                f"FROM {self._t(SCORES)} FINAL GROUP BY group_id ORDER BY group_id",
                th=list(thresholds),
            )
        }

    # Pipeline health

    def events_per_second(self) -> list[tuple[str, float]]:
        """Archived events per second, per minute of event time, over the last hour of event time."""
        e = self._t(EVENTS)
        return [
            (str(m), float(r))
            for m, r in self._rows(
                f"SELECT formatDateTime(toStartOfMinute(ts), '{TIME}', 'UTC') AS m, count() / 60 FROM {e} FINAL "
                f"WHERE ts > (SELECT max(ts) FROM {e}) - INTERVAL 1 HOUR GROUP BY m ORDER BY m"
            )
        ]

    def writes_per_second(self) -> list[tuple[str, float]]:
        """Score rows written per second, per minute of write time (``written_at``), over the last hour of writes."""
        h = self._t(SCORE_HISTORY)
        return [
            (str(m), float(r))
            for m, r in self._rows(
                f"SELECT formatDateTime(toStartOfMinute(written_at), '{TIME}', 'UTC') AS m, count() / 60 FROM {h} "
                f"WHERE written_at > (SELECT max(written_at) FROM {h}) - INTERVAL 1 HOUR GROUP BY m ORDER BY m"
            )
        ]

    def dead_letters(self) -> list[tuple[str, int, str, str]]:
        """Dead letters by reason (the text before its first colon): count, last received, an example reason."""
        return [
            (str(kind), int(n), str(last), str(example))
            for kind, n, last, example in self._rows(
                f"SELECT splitByChar(':', reason)[1] AS kind, count(), "
                f"formatDateTime(max(received_at), '{TIME}', 'UTC'), any(reason) "
                f"FROM {self._t(DEAD_LETTERS)} FINAL GROUP BY kind ORDER BY count() DESC, kind"
            )
        ]

    def freshness(self) -> list[Freshness]:
        """Per group, ``written_at - as_of`` of the current scores, in seconds."""
        return [
            Freshness(str(g), int(n), float(p50), float(p95), float(mx), str(a), str(w))
            for g, n, p50, p95, mx, a, w in self._rows(
                "SELECT group_id, count(), quantile(0.5)(lag), quantile(0.95)(lag), max(lag), "
                f"formatDateTime(max(as_of), '{TIME}', 'UTC'), formatDateTime(max(written_at), '{TIME}', 'UTC') "
                "FROM (SELECT group_id, as_of, written_at, dateDiff('millisecond', as_of, written_at) / 1000 AS lag "
                f"FROM {self._t(SCORES)} FINAL) GROUP BY group_id ORDER BY group_id"
            )
        ]

    def models(self) -> list[tuple[str, int, str, str, float | None]]:
        """Registered model versions: group, version, stage, created, test ROC AUC (None if not recorded)."""
        return [
            (str(g), int(v), str(s), str(c), None if auc is None else float(auc))
            for g, v, s, c, auc in self._rows(
                f"SELECT group_id, version, stage, formatDateTime(created_at, '{TIME}', 'UTC'), "
                "if(JSONHas(metrics, 'roc_auc'), JSONExtractFloat(metrics, 'roc_auc'), NULL) "
                f"FROM {self._t(MODELS)} FINAL ORDER BY group_id, version DESC"
            )
        ]
