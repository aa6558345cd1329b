"""The trending logic of ``stream.trending`` without Bytewax: closing, invariance, a pandas recount, bounded state."""

from __future__ import annotations

import random
import zlib

import pandas as pd
import pytest

from schemas.events import TYPE_NAMES, EventRecord
from schemas.groups import GroupCatalog, ProductGroup
from stream.trending import (
    HOUR_MS,
    TrendConfig,
    TrendRanker,
    TrendRow,
    TrendShard,
    TrendWindow,
    rank_closed,
    surge_score,
)

T0 = 1_500_000_000_000 - 1_500_000_000_000 % (24 * HOUR_MS)
CATALOG = GroupCatalog(
    (ProductGroup(name="coffee", categories=("COFFEE",)), ProductGroup(name="snacks", categories=("CHIPS",))),
    {**{f"c{i}": (0, 2) for i in range(5)}, **{f"s{i}": (1, 2) for i in range(5)}},
)


def events(n: int, hours: int, seed: int) -> list[EventRecord]:
    rng = random.Random(seed)
    items = [*(f"c{i}" for i in range(5)), *(f"s{i}" for i in range(5)), "x"]
    weights = [10, 5, 3, 2, 1, 8, 4, 2, 1, 1, 3]
    out = []
    for k in range(n):
        ts = T0 + rng.randrange(hours * HOUR_MS)
        item = rng.choices(items, weights)[0]
        out.append(EventRecord(f"u{k % 17}", item, rng.choice([0, 0, 2]), ts, f"e{k}", 1.0, 0, f"f:{k}"))
    return sorted(out, key=lambda r: r.ts_ms)


def run(cfg: TrendConfig, recs: list[EventRecord], n_sources: int, max_batch: int, seed: int) -> list[TrendRow]:
    """Feed ``recs`` as ``n_sources`` customer shards would (each in time order, random batches), rank, collect.

    Each source's horizon after a batch is its last event time minus an hour of lateness (as a shard's is).
    """
    rng = random.Random(seed)
    by_source: list[list[EventRecord]] = [[] for _ in range(n_sources)]
    for r in recs:
        by_source[zlib.crc32(r.user_id.encode()) % n_sources].append(r)
    shards = [TrendShard() for _ in range(cfg.shards)]
    rankers: dict[str, TrendRanker] = {}
    pos = [0] * n_sources
    rows: list[TrendRow] = []
    final_horizon = recs[-1].ts_ms + 30 * HOUR_MS  # every source ends past the data (closes every window)
    done = [False] * n_sources
    while not all(done):
        s = rng.choice([i for i in range(n_sources) if not done[i]])
        batch = by_source[s][pos[s] : pos[s] + rng.randint(1, max_batch)]
        pos[s] += len(batch)
        if pos[s] >= len(by_source[s]):
            done[s] = True
            horizon = final_horizon
        else:
            horizon = batch[-1].ts_ms - HOUR_MS if batch else None
        for key, inp in cfg.route(CATALOG, s, batch, horizon, moved=True):
            for closed in cfg.apply(shards[int(key)], inp):
                rows += rank_closed(rankers.setdefault(closed.window, TrendRanker()), closed, cfg.shards, cfg.top_n)
    return rows


CATEGORIES = {**{f"c{i}": "COFFEE" for i in range(5)}, **{f"s{i}": f"CHIPS{i % 2}" for i in range(5)}}  # x: none
CFG = TrendConfig(
    (TrendWindow.parse("1h/15m"), TrendWindow.parse("6h/1h")), min_support=3, top_n=3, sources=1, categories=CATEGORIES
)


@pytest.mark.parametrize(("n_sources", "shards", "max_batch"), [(1, 1, 1), (3, 1, 50), (3, 4, 7), (2, 2, 400)])
def test_rows_do_not_depend_on_batches_sources_or_trend_shards(n_sources: int, shards: int, max_batch: int):
    recs = events(3000, 30, seed=1)
    base = run(CFG, recs, 1, 100, seed=0)
    cfg = TrendConfig(CFG.windows, min_support=3, top_n=3, sources=n_sources, shards=shards, categories=CATEGORIES)
    assert sorted(run(cfg, recs, n_sources, max_batch, seed=max_batch)) == sorted(base)
    assert len(base) > 100


def test_popularity_top_n_equals_a_pandas_recount():
    recs = events(3000, 30, seed=2)
    rows = run(CFG, recs, 1, 60, seed=3)
    df = pd.DataFrame({"ts": [r.ts_ms for r in recs], "item": [r.item_id for r in recs]})
    df["type"] = [TYPE_NAMES[r.type_index] for r in recs]
    df["group"] = [{0: "coffee", 1: "snacks"}.get(CATALOG.groups_of(r.item_id)[0]) for r in recs]
    df["category"] = [CATEGORIES.get(r.item_id) for r in recs]
    ranked: dict[tuple, list[tuple[int, str, int]]] = {}
    for r in rows:
        if r.rank:
            ranked.setdefault((r.window, r.window_end, r.scope, r.type), []).append((r.rank, r.key, r.count))
    checked = 0
    for w in CFG.windows:
        ends = sorted({r.window_end for r in rows if r.window == w.name})
        assert ends == list(range(ends[0], ends[-1] + 1, w.every_ms))  # every end, once
        for end in ends:
            inside = df[(df.ts >= end - w.length_ms) & (df.ts < end)]
            for scope, col in (("item", "item"), ("group", "group"), ("category", "category")):
                counts = inside.dropna(subset=[col]).groupby(["type", col]).size().reset_index(name="n")
                for type_, g in counts.groupby("type"):
                    want = sorted(zip(-g.n, g[col], strict=True))[: CFG.top_n]
                    got = sorted(ranked.pop((w.name, end, scope, type_)))
                    assert [(k, n) for _, k, n in got] == [(k, -n) for n, k in want], (w.name, end, scope, type_)
                    checked += 1
    assert checked > 300
    assert not ranked  # no ranked rows the recount does not have


def test_a_window_closes_only_once_every_source_has_passed_its_end():
    cfg = TrendConfig((TrendWindow.parse("1h/1h"),), min_support=1, top_n=5, sources=2)
    sh = TrendShard()
    rec = EventRecord("u", "x", 0, T0 + 10, "e", 1.0, 0, "f")
    [(_, inp)] = cfg.route(CATALOG, 0, [rec], T0 + 2 * HOUR_MS, moved=True)
    assert cfg.apply(sh, inp) == []  # source 1 not heard from
    [(_, inp)] = cfg.route(CATALOG, 1, [], T0 + HOUR_MS - 1, moved=True)
    assert cfg.apply(sh, inp) == []  # source 1 is still inside the window
    [(_, inp)] = cfg.route(CATALOG, 1, [], T0 + HOUR_MS, moved=True)
    [closed] = cfg.apply(sh, inp)
    assert [(r.key, r.count, r.window_end) for r in closed.rows] == [("x", 1, T0 + HOUR_MS)]


def test_a_surge_needs_support_and_a_steady_count_does_not_surge():
    assert surge_score(3, 0.5) > 1 and surge_score(40, 40.0) == 0.0
    cfg = TrendConfig((TrendWindow.parse("1h/1h"),), min_support=5, top_n=5, half_life_hours=3)
    sh = TrendShard()
    out = []
    for h in range(1, 30):
        counts = {(T0 + (h - 1) * HOUR_MS, "item", "steady", 0): 40, (T0 + (h - 1) * HOUR_MS, "item", "rare", 0): 1}
        if h == 20:
            counts[(T0 + (h - 1) * HOUR_MS, "item", "rare", 0)] = 4  # below the support: not a surge
        if h == 25:
            counts[(T0 + (h - 1) * HOUR_MS, "item", "rare", 0)] = 12
        [closed] = cfg.apply(sh, _input(counts, T0 + h * HOUR_MS))
        out += rank_closed(TrendRanker(), closed, 1, 5)
    surging = {(r.window_end - T0) // HOUR_MS: r.key for r in out if r.surge_rank == 1}
    assert surging == {25: "rare"}
    assert all(r.rank == 1 for r in out if r.key == "steady")


def test_state_is_bounded_series_and_buckets_of_the_past_are_forgotten():
    cfg = TrendConfig((TrendWindow.parse("1h/15m"),), min_support=1, top_n=5, forget_after_hours=2)
    sh = TrendShard()
    cfg.apply(sh, _input({(T0, "item", f"i{k}", 0): 1 for k in range(50)}, T0))
    for h in range(1, 6):
        cfg.apply(sh, _input({(T0 + h * HOUR_MS, "item", "live", 0): 1}, T0 + h * HOUR_MS))
    ws = sh.windows["1h"]
    assert set(ws.models) == {("item", "live", 0)}
    assert set(ws.running) == {("item", "live", 0)} and list(ws.by_count) == [("item", 0)]
    assert len(ws.idle) < 50 and not any(e < T0 + 5 * HOUR_MS for e in ws.supported_at)
    assert min(sh.buckets) >= T0 + 3 * HOUR_MS


def _input(counts, horizon):
    from stream.trending import TrendInput

    return TrendInput(0, 0, counts, horizon)


def test_nothing_is_kept_for_window_ends_jumped_over_when_no_series_is_live():
    cfg = TrendConfig((TrendWindow.parse("1h/15m"),), min_support=2, top_n=5)
    sh = TrendShard()
    cfg.apply(sh, _input({(T0, "item", "a", 0): 3}, T0))
    cfg.apply(sh, _input({(T0 + 10 * HOUR_MS, "item", "b", 0): 3}, T0 + 10 * HOUR_MS))
    ws = sh.windows["1h"]
    assert sh.closed["1h"] >= T0 + 10 * HOUR_MS - 15 * 60_000  # the idle hours were jumped over
    assert all(e > sh.closed["1h"] for e in ws.supported_at), ws.supported_at
    assert ws.models[("item", "a", 0)].count == 0 and set(ws.running) <= {("item", "b", 0)}
