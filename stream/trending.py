"""Trending: popularity and surge of items, groups and catalog categories over sliding event-time windows.

Two keyed steps of the dataflow, both pure logic here (no I/O):

1. ``TrendShard`` (keyed by trend shard, ``crc32(scope|key) % shards``): counts
   the events the customer shards applied (so duplicates are already gone) in
   fine buckets per series ``(scope, key, type)``, and closes windows once every
   customer shard's retention horizon has passed their end: no event that can
   still be accepted falls in them, so a closed window is final whatever the
   batch sizes, restarts or process count. At each close the series whose
   window count changed are compared with their forecast (the exponentially
   weighted mean of ``river.stats.EWMean`` over past window counts, updated in
   closed form only when the count changes, so that idle and steady series
   cost nothing), and the local top N by count (kept sorted) and by surge leave
   as candidates: a close costs what changed, not what is live.
2. ``TrendRanker`` (keyed by window name): waits until every trend shard has
   closed a window end, ranks the candidates and emits the final rows.

Surge is the Poisson upper tail of the count under the forecast, as
``-log10 P(X >= count)``; a count under ``min_support`` never surges (3 views
against an expected 0.5 is not trending), a series surges only once its
forecast has seen a window's length of its history (no surge from the ramp-up
of a series that just appeared: the cold start is a later slice), and a series is ranked by surge only
from ``min_surge`` (4: a count with less than a 1e-4 chance under the
forecast; thousands of series are tested every window), so a steady series
never is.

>>> cfg = TrendConfig((TrendWindow.parse("1h/1h"),), min_support=3, top_n=2, half_life_hours=1.0)
>>> sh, t0 = TrendShard(), 10 * HOUR_MS
>>> def hour(h, counts):  # one customer shard applied ``counts`` in hour ``h``; its horizon is the hour's start
...     inp = TrendInput(0, 0, {(t0 + h * HOUR_MS, "item", k, 0): n for k, n in counts.items()}, t0 + h * HOUR_MS)
...     return [(r.key, r.count, round(r.expected, 2)) for c in cfg.apply(sh, inp) for r in c.rows]
>>> hour(0, {"a": 4, "b": 4}), hour(1, {"a": 4, "b": 4})
([], [('a', 4, 0.0), ('b', 4, 0.0)])
>>> hour(2, {"a": 4, "b": 12}), hour(3, {})
([('a', 4, 4.0), ('b', 4, 4.0)], [('b', 12, 4.0), ('a', 4, 4.0)])
"""

from __future__ import annotations

import heapq
import math
import re
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from scipy.special import pdtrc
from sortedcontainers import SortedList

from schemas.events import TYPE_NAMES, EventRecord
from schemas.groups import GroupCatalog
from stream.errors import StreamError

HOUR_MS = 3_600_000
_UNITS_MS = {"m": 60_000, "h": HOUR_MS, "d": 24 * HOUR_MS}
STATE_VERSION = 2  # 2: per-window state (_Window), forecasts updated on count changes
Series = tuple[str, str, int]  # (scope, key, type_index)
BucketKey = tuple[int, str, str, int]  # (bucket start ms, scope, key, type_index)


class TrendConfigError(StreamError, ValueError):
    """A trending window or setting that cannot work."""


def duration_ms(text: str) -> int:
    """Milliseconds of ``5m``, ``1h``, ``7d``.

    >>> duration_ms("5m"), duration_ms("24h")
    (300000, 86400000)
    """
    m = re.fullmatch(r"(\d+)([mhd])", text.strip())
    if m is None or int(m.group(1)) == 0:
        msg = f"trending: {text!r} is not a duration such as 5m, 1h or 7d"
        raise TrendConfigError(msg)
    return int(m.group(1)) * _UNITS_MS[m.group(2)]


@dataclass(frozen=True)
class TrendWindow:
    """A sliding window: ``length_ms`` long, a new one ending every ``every_ms`` (on multiples of it, UTC)."""

    name: str
    length_ms: int
    every_ms: int

    @classmethod
    def parse(cls, text: str) -> TrendWindow:
        """``LENGTH/EVERY`` as in the settings; named by its length.

        >>> TrendWindow.parse("1h/5m")
        TrendWindow(name='1h', length_ms=3600000, every_ms=300000)
        """
        length, sep, every = text.partition("/")
        n, e = duration_ms(length), duration_ms(every if sep else length)
        if n % e:
            msg = f"trending window {text!r}: the length must be a multiple of the step"
            raise TrendConfigError(msg)
        return cls(length.strip(), n, e)


class TrendRow(NamedTuple):
    """A row of the ``trending`` table (``rank`` by count, ``surge_rank`` by surge; 0: not in the top N)."""

    window_end: int  # ms
    window: str
    scope: str
    key: str
    type: str
    count: int  # type: ignore[assignment]  # the column's name in the table (shadows tuple.count)
    expected: float
    surge: float
    rank: int
    surge_rank: int


@dataclass
class TrendInput:
    """What a customer shard applied, counted per bucket and series, and its retention horizon."""

    shard: int  # trend shard
    source: int  # customer shard
    counts: dict[BucketKey, int]
    horizon: int | None


@dataclass
class TrendClosed:
    """Windows a trend shard closed: its candidate rows, and the last window end it has closed."""

    window: str
    shard: int
    through: int
    rows: list[TrendRow]


def surge_score(count: int, expected: float) -> float:
    """``-log10 P(X >= count)`` for X Poisson with mean ``expected``: 0 when the count is not above it.

    >>> round(surge_score(3, 0.5), 2), round(surge_score(30, 3.0), 1), surge_score(2, 4.0)
    (1.84, 19.4, 0.0)
    """
    if count <= expected:
        return 0.0
    p = float(pdtrc(count - 1, expected))
    return -math.log10(p) if p > 0 else 324.0  # beyond float: the tail underflows


class _Model:
    """Forecast of one series: the exponentially weighted mean of its full window counts, kept lazily.

    The same estimator as ``river.stats.EWMean`` (the first value starts the
    mean; each later one moves it by ``fading``), but it is only updated when
    the series' window count changes: between two changes every window has the
    same count ``count`` (0 while the series is idle), and ``k`` windows of a
    constant count ``c`` move the mean in closed form to
    ``c + (mean - c) * (1 - fading) ** k``. A close therefore costs nothing for
    a series whose count did not change, and ``forecast`` is a pure function of
    the stored state (whoever asks, whenever: the rows do not depend on which
    series a trend shard happened to look at). It learns from windows ending at
    ``since`` or later: the first that hold the series' whole history since it
    appeared (those before hold a ramp); zeros before its first learnt window
    are not learnt.

    >>> from river.stats import EWMean
    >>> counts, ref, m = [4, 4, 0, 0, 9, 9, 9, 2], EWMean(fading_factor=0.25), _Model(since=0, at=-1)
    >>> for x in counts:
    ...     ref.update(x)
    >>> for end, x in enumerate(counts):
    ...     if x != m.count:
    ...         _ = m.change(x, end, 1, 0.25)
    >>> mean, seen = m.forecast(len(counts), 1, 0.25)
    >>> round(mean, 12) == round(ref.get(), 12), seen
    (True, 8)
    """

    __slots__ = ("at", "count", "last", "mean", "seen", "since")

    def __init__(self, since: int, at: int):
        self.mean = 0.0
        self.seen = 0  # windows learnt from, through ``at``
        self.since = since
        self.at = at  # end of the last window accounted for (learnt, or before ``since``)
        self.count = 0  # the count of every window after ``at`` until the next change
        self.last = at  # while idle: the last window end with events (forgetting)

    def forecast(self, end: int, every: int, fading: float) -> tuple[float, int]:
        """The mean and the windows learnt from before the window ending at ``end`` (pure)."""
        first = max(self.at + every, self.since)  # the windows (at, end) at or after since all had ``count``
        k = (end - first) // every if end > first else 0
        if k <= 0 or (self.count == 0 and not self.seen):
            return self.mean, self.seen
        if not self.seen:
            return float(self.count), k
        c = self.count
        return c + (self.mean - c) * (1.0 - fading) ** k, self.seen + k

    def change(self, count: int, end: int, every: int, fading: float) -> tuple[float, int]:
        """The window ending at ``end`` has ``count`` (another than ``self.count``); the forecast it had.

        A series that leaves the window (count 0) is not learnt from at ``end``:
        its zeros are learnt lazily, as those of every idle window.
        """
        mean, seen = self.forecast(end, every, fading)  # every window before ``end`` accounted for
        if count == 0:
            self.mean, self.seen, self.at = mean, seen, end - every
            self.last = end - every
        else:
            self.mean, self.seen = mean, seen
            if end >= self.since:
                self.mean = fading * count + (1.0 - fading) * mean if seen else float(count)
                self.seen += 1
            self.at = end
        self.count = count
        return mean, seen

    def __getstate__(self) -> tuple:
        return (self.mean, self.seen, self.since, self.at, self.count, self.last)

    def __setstate__(self, state: tuple) -> None:
        self.mean, self.seen, self.since, self.at, self.count, self.last = state


@dataclass
class _Window:
    """What a trend shard keeps per window: counts of the last closed one, forecasts, and indexes of both."""

    running: dict[Series, int] = field(default_factory=dict)  # counts in the last closed window
    models: dict[Series, _Model] = field(default_factory=dict)
    by_count: dict[tuple[str, int], SortedList] = field(default_factory=dict)  # (scope, type) -> (-count, key)
    hot: set[Series] = field(default_factory=set)  # surge >= min_surge at the last close
    supported_at: dict[int, set[Series]] = field(default_factory=dict)  # end -> series whose support starts then
    idle: deque[tuple[int, Series]] = field(default_factory=deque)  # (last end with events, series), in order


@dataclass
class TrendShard:
    """State of one trend shard (its recovery snapshot)."""

    version: int = STATE_VERSION
    shard: int = -1
    horizons: dict[int, int] = field(default_factory=dict)  # customer shard -> its retention horizon
    buckets: dict[int, dict[Series, int]] = field(default_factory=dict)  # fine bucket start -> counts
    closed: dict[str, int] = field(default_factory=dict)  # window -> last window end closed
    windows: dict[str, _Window] = field(default_factory=dict)
    dropped_late: int = 0  # events in windows already closed (only from a customer shard without a horizon)


@dataclass(frozen=True)
class TrendConfig:
    """What trending computes; ``apply`` runs a trend shard, ``route`` feeds it."""

    windows: tuple[TrendWindow, ...]
    min_support: int = 5
    min_surge: float = 4.0
    top_n: int = 100
    half_life_hours: float = 24.0
    half_lives: tuple[tuple[str, float], ...] = ()  # (window name, hours): a window's own half-life
    min_expected: float = 0.5
    forget_after_hours: float = 72.0
    shards: int = 1
    sources: int = 1  # customer shards feeding it: a window closes once every one has passed its end
    type_names: tuple[str, ...] = TYPE_NAMES  # the event-type vocabulary (events.types), by type index
    # item -> its catalog category (the ``category`` scope; setting trending.category_column); empty: no such scope
    categories: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def bucket_ms(self) -> int:
        """The fine bucket: the greatest common step of the windows."""
        return math.gcd(*(w.every_ms for w in self.windows))

    def fading(self, w: TrendWindow) -> float:
        """EWMean's fading factor per window step for the window's half-life (``half_lives``, else ``half_life_hours``).

        >>> cfg = TrendConfig((TrendWindow.parse("24h/1h"),), half_life_hours=1.0, half_lives=(("24h", 2.0),))
        >>> cfg.fading(TrendWindow.parse("1h/1h")), round(cfg.fading(TrendWindow.parse("24h/1h")), 4)
        (0.5, 0.2929)
        """
        hours = dict(self.half_lives).get(w.name, self.half_life_hours)
        return 1.0 - 0.5 ** (w.every_ms / (hours * HOUR_MS))

    # -- step 0: from a customer shard's output to trend shards --------------------------------------------

    def route(
        self,
        catalog: GroupCatalog,
        source: int,
        applied: Iterable[EventRecord],
        horizon: int | None,
        moved: bool,
        name: Callable[[int], str] = str,
    ) -> list[tuple[str, TrendInput]]:
        """Count ``applied`` per trend shard, bucket and series (items, their groups but ``all``, their category).

        Every trend shard hears a moved horizon, so windows close everywhere. ``name``
        names a trend shard's state (``stream.placement.Placement.shard_key``).
        """
        n, b = self.shards, self.bucket_ms
        names, all_index, categories = catalog.names, catalog.all_index, self.categories
        parts: list[dict[BucketKey, int]] = [{} for _ in range(n)]
        shard_of: dict[tuple[str, str], int] = {}
        for rec in applied:
            bucket = rec.ts_ms - rec.ts_ms % b
            series = [("item", rec.item_id)]
            series += [("group", names[g]) for g in catalog.groups_of(rec.item_id) if g != all_index]
            category = categories.get(rec.item_id)
            if category is not None:
                series.append(("category", category))
            for scope, key in series:
                s = shard_of.get((scope, key))
                if s is None:
                    s = shard_of[scope, key] = zlib.crc32(f"{scope}|{key}".encode()) % n
                k = (bucket, scope, key, rec.type_index)
                parts[s][k] = parts[s].get(k, 0) + 1
        return [(name(s), TrendInput(s, source, counts, horizon)) for s, counts in enumerate(parts) if counts or moved]

    # -- step 1: a trend shard ----------------------------------------------------------------------------

    def apply(self, sh: TrendShard, inp: TrendInput) -> list[TrendClosed]:
        """Add counts; close every window end that every customer shard's horizon has passed."""
        sh.shard = inp.shard
        late = max(sh.closed.values(), default=None)
        buckets = sh.buckets
        for (bucket, scope, key, type_index), n in inp.counts.items():
            if late is not None and bucket < late:
                sh.dropped_late += n
                continue
            cell = buckets.get(bucket)
            if cell is None:
                cell = buckets[bucket] = {}
            s = (scope, key, type_index)
            cell[s] = cell.get(s, 0) + n
        if inp.horizon is not None and inp.horizon > sh.horizons.get(inp.source, inp.horizon - 1):
            sh.horizons[inp.source] = inp.horizon
        if len(sh.horizons) < self.sources:
            return []
        horizon = min(sh.horizons.values())
        out = [c for w in self.windows if (c := self._close(sh, w, horizon)) is not None]
        keep_from = min(sh.closed[w.name] - w.length_ms for w in self.windows)
        for bucket in [k for k in buckets if k < keep_from]:
            del buckets[bucket]
        return out

    def _close(self, sh: TrendShard, w: TrendWindow, horizon: int) -> TrendClosed | None:
        every, length = w.every_ms, w.length_ms
        closed = sh.closed.get(w.name)
        if closed is None:  # the first end: before any data, or where the horizon stands
            first = min(sh.buckets, default=horizon)
            closed = sh.closed[w.name] = min(first, horizon) // every * every
        if closed + every > horizon:
            return None
        ws = sh.windows.setdefault(w.name, _Window())
        rows: list[TrendRow] = []
        buckets, step = sh.buckets, self.bucket_ms
        while closed + every <= horizon:
            end = closed + every
            delta: dict[Series, int] = {}
            for bucket in range(closed, end, step):  # in
                for s, n in buckets.get(bucket, {}).items():
                    delta[s] = delta.get(s, 0) + n
            for bucket in range(closed - length, end - length, step):  # out
                for s, n in buckets.get(bucket, {}).items():
                    delta[s] = delta.get(s, 0) - n
            rows += self._step(w, ws, end, delta)
            closed = end
            if not ws.running:  # nothing in the window: jump to the next data (idle forecasts decay lazily)
                later = [k for k in buckets if k >= closed]
                nxt = min(later) // every * every if later else horizon // every * every
                closed = max(closed, min(nxt, horizon // every * every))
                for skipped in [e for e in ws.supported_at if e <= closed]:  # ends jumped over: nobody left in them
                    del ws.supported_at[skipped]
        sh.closed[w.name] = closed
        return TrendClosed(w.name, sh.shard, closed, rows)

    def _step(self, w: TrendWindow, ws: _Window, end: int, delta: dict[Series, int]) -> list[TrendRow]:
        """Close the window ending at ``end``: apply the count changes, then the local top N by count and by surge.

        Work is proportional to the series whose count changed, the local top
        N and the series surging: an unchanged series keeps its rank key, and
        its surge can only fall (its forecast moves towards its count), except
        on the window its support starts (``supported_at``), when it is looked at.
        """
        every, fading = w.every_ms, self.fading(w)
        forget = int(self.forget_after_hours * HOUR_MS)
        warmup = w.length_ms // every  # a forecast from at least one window's length of history
        running, models, by_count = ws.running, ws.models, ws.by_count
        seen_now: dict[Series, tuple[float, int]] = {}  # forecast at ``end`` of the series that changed
        for s, d in delta.items():
            if not d:
                continue
            old = running.get(s, 0)
            count = old + d
            ranked = by_count.get((s[0], s[2]))
            if ranked is None:
                ranked = by_count[s[0], s[2]] = SortedList()
            if old:
                ranked.remove((-old, s[1]))
            m = models.get(s)
            if count:
                running[s] = count
                ranked.add((-count, s[1]))
                # New, or back after ``forget`` without events (whether or not the sweep removed it yet):
                # its first event is in the last step, and windows before ``since`` hold part of its ramp.
                if m is None or (m.count == 0 and end - m.last > forget):
                    m = models[s] = _Model(end - every + w.length_ms, end - every)
                seen_now[s] = m.change(count, end, every, fading)
                if count >= self.min_support and seen_now[s][1] < warmup:
                    first = max(end + every, m.since)
                    starts = first + max(0, warmup - m.seen) * every
                    ws.supported_at.setdefault(starts, set()).add(s)
            else:
                del running[s]
                if not ranked:
                    del by_count[s[0], s[2]]
                ws.hot.discard(s)
                if m is not None:
                    m.change(0, end, every, fading)
                    ws.idle.append((m.last, s))
        look = ws.hot | set(seen_now) | {s for s in ws.supported_at.pop(end, ()) if s in running}
        scored: dict[Series, tuple[float, float]] = {}  # series -> (expected, surge)

        def score(s: Series) -> tuple[float, float]:
            got = scored.get(s)
            if got is None:
                mean, seen = seen_now.get(s) or models[s].forecast(end, every, fading)
                expected = mean if seen else 0.0
                count = running[s]
                supported = count >= self.min_support and seen >= warmup
                surge = surge_score(count, max(expected, self.min_expected)) if supported else 0.0
                got = scored[s] = (expected, surge)
            return got

        ws.hot = {s for s in look if score(s)[1] >= self.min_surge}
        if (end // every) % max(1, HOUR_MS // every) == 0:
            self._forget(ws, end, forget)
        hot_by: dict[tuple[str, int], list[Series]] = {}
        for s in ws.hot:
            hot_by.setdefault((s[0], s[2]), []).append(s)
        top, rows = self.top_n, []
        for scope, type_index in sorted(by_count.keys() | hot_by.keys()):
            ranked = by_count.get((scope, type_index))
            pop = [(scope, key, type_index) for _, key in ranked.islice(0, top)] if ranked is not None else []
            hot = heapq.nsmallest(
                top, hot_by.get((scope, type_index), []), key=lambda s: (-score(s)[1], -running[s], s[1])
            )
            # One trend shard: its top N are the final ranks; else 1 marks a local candidate, the ranker numbers them
            final = self.shards == 1
            pop_keys = {s[1]: i if final else 1 for i, s in enumerate(pop, 1)}
            hot_keys = {s[1]: i if final else 1 for i, s in enumerate(hot, 1)}
            for s in pop + sorted((s for s in hot if s[1] not in pop_keys), key=lambda s: s[1]):
                expected, surge = score(s)
                rows.append(
                    TrendRow(
                        end,
                        w.name,
                        scope,
                        s[1],
                        self.type_names[type_index],
                        running[s],
                        expected,
                        surge,
                        pop_keys.get(s[1], 0),
                        hot_keys.get(s[1], 0),
                    )
                )
        return rows

    @staticmethod
    def _forget(ws: _Window, end: int, forget: int) -> None:
        """Free the forecasts of the series idle for ``forget`` (a series back later starts afresh anyway)."""
        idle, models = ws.idle, ws.models
        while idle and end - idle[0][0] > forget:
            last, s = idle.popleft()
            m = models.get(s)
            if m is not None and m.count == 0 and m.last == last:
                del models[s]


@dataclass
class TrendRanker:
    """State of the ranking step of one window: how far each trend shard has closed, candidates per end."""

    through: dict[int, int] = field(default_factory=dict)
    pending: dict[int, list[TrendRow]] = field(default_factory=dict)


def rank_closed(ranker: TrendRanker, closed: TrendClosed, shards: int, top_n: int) -> list[TrendRow]:
    """Take one ``TrendClosed``; the final rows of every window end that all trend shards have closed.

    With one trend shard its rows are final already (it numbered them) and pass through.

    >>> r = TrendRanker()
    >>> row = lambda key, n, surge: TrendRow(5, "1h", "item", key, "view", n, 1.0, surge, 1, int(surge > 0))
    >>> rank_closed(r, TrendClosed("1h", 0, 5, [row("a", 9, 0.0), row("b", 3, 2.0)]), shards=2, top_n=10)
    []
    >>> [(x.key, x.rank, x.surge_rank) for x in rank_closed(r, TrendClosed("1h", 1, 5, [row("c", 9, 4.0)]), 2, 10)]
    [('a', 1, 0), ('c', 2, 1), ('b', 3, 2)]
    """
    if closed.through > ranker.through.get(closed.shard, closed.through - 1):
        ranker.through[closed.shard] = closed.through
    if shards == 1:  # the only trend shard numbered its rows itself (TrendConfig._step): they are final
        return closed.rows
    for row in closed.rows:
        ranker.pending.setdefault(row.window_end, []).append(row)
    if len(ranker.through) < shards:
        return []
    ready = min(ranker.through.values())
    out: list[TrendRow] = []
    for end in sorted(e for e in ranker.pending if e <= ready):
        groups: dict[tuple[str, str], list[TrendRow]] = {}
        for row in ranker.pending.pop(end):
            groups.setdefault((row.scope, row.type), []).append(row)
        for _, rows in sorted(groups.items()):
            pop = sorted((r for r in rows if r.rank), key=lambda r: (-r.count, r.key))[:top_n]
            hot = sorted((r for r in rows if r.surge_rank), key=lambda r: (-r.surge, -r.count, r.key))[:top_n]
            rank = {r.key: i for i, r in enumerate(pop, 1)}
            surge_rank = {r.key: i for i, r in enumerate(hot, 1)}
            for r in sorted({r.key: r for r in pop + hot}.values(), key=lambda r: (rank.get(r.key, top_n + 1), r.key)):
                # TrendRow(*r[:8], ...), not r._replace(...): a third of the ranker's time on sparse streams
                out.append(TrendRow(*r[:8], rank.get(r.key, 0), surge_rank.get(r.key, 0)))
    return out
