"""Campaigns through the command line: recorded audiences, holdout flags, measured uplift, as-of segments, retention."""

from __future__ import annotations

import json
import os
import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from propstream import app
from propstream.campaigns import holdout_flag
from propstream.cli import main
from schemas.tables import EVENTS, SCORE_HISTORY, SCORES, row_version
from stream.sinks.clickhouse import apply_retention
from tests.integration.conftest import make_settings
from tests.integration.helpers import query

pytestmark = pytest.mark.integration

T0 = datetime(2017, 6, 1, tzinfo=UTC)


def _insert(settings, table, rows: list[list]) -> None:
    app.client_for(settings).insert(table.at(settings.clickhouse.database), rows, column_names=list(table.inserted))


def _scores(settings, users: list[str], group: str, model_version: int, seed: int, at: datetime = T0) -> dict:
    rng = random.Random(seed)
    scores = {u: round(rng.uniform(0.05, 0.45), 6) for u in users}
    ms = int(at.timestamp() * 1000)
    rows = [[u, group, s, model_version, at, row_version(ms, model_version)] for u, s in scores.items()]
    _insert(settings, SCORES, rows)
    _insert(settings, SCORE_HISTORY, rows)
    return scores


def _cli(settings, world, capsys, *args: str) -> str:
    common = ["--data-dir", str(settings.data_dir), "--clickhouse", settings.dsn]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROPSTREAM_CLICKHOUSE__DATABASE", settings.clickhouse.database)
        mp.setenv("PROPSTREAM_GROUPS_FILE", str(world.groups_file))
        mp.setenv("PROPSTREAM_CATALOG_FILE", str(world.catalog_file))
        capsys.readouterr()
        assert main([*args, *common]) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def test_holdout_flags_do_not_change_across_runs_and_model_versions(world, tmp_path, chdb_dsn, capsys):
    settings = make_settings(tmp_path, world, chdb_dsn)
    users = [f"h{i}" for i in range(2469)]
    _scores(settings, users, "coffee", 1, seed=1)
    segment = "segment --campaign c1 --group coffee --top 1500 --holdout 0.1 --format json".split()
    first = json.loads(_cli(settings, world, capsys, *segment))
    _scores(settings, users, "coffee", 2, seed=2, at=T0 + timedelta(days=1))  # a new model: other scores, other order
    second = json.loads(_cli(settings, world, capsys, *segment))
    a = {r["user_id"]: r["holdout"] for r in first}
    b = {r["user_id"]: r["holdout"] for r in second}
    assert len(a.keys() & b.keys()) > 500 and a.keys() != b.keys()
    assert all(a[u] == b[u] for u in a.keys() & b.keys())
    stored = dict(query(settings, "SELECT user_id, holdout FROM {db}.campaign_members FINAL WHERE campaign = 'c1'"))
    assert stored == {**a, **b} == {u: holdout_flag("c1", u, 0.1) for u in a.keys() | b.keys()}
    versions = dict(query(settings, "SELECT user_id, model_version FROM {db}.campaign_members FINAL"))
    assert {versions[u] for u in b} == {2}
    common = ["--data-dir", str(tmp_path), "--clickhouse", chdb_dsn]
    with pytest.MonkeyPatch.context() as mp:  # another share would change flags within the campaign: refused
        mp.setenv("PROPSTREAM_CLICKHOUSE__DATABASE", settings.clickhouse.database)
        args = ["segment", "--campaign", "c1", "--group", "coffee", "--top", "10", "--holdout", "0.2", *common]
        assert main(args) == 1
        assert "holds out 0.1 of its audience" in capsys.readouterr().err


def _purchases(users, coffee_items, other_items, at: datetime, rng, p_convert: float) -> list[list]:
    """Events for ``users``: a coffee purchase within 30 days with probability ``p_convert``, plus noise outside it."""
    rows = []
    for u in users:

        def add(day: float, item: str, kind: str = "purchase", u: str = u) -> None:
            ts = at + timedelta(days=day)
            rows.append([u, item, kind, ts, f"{u}-{len(rows)}", 1.0, 2.5, "test"])

        if rng.random() < p_convert:
            add(rng.uniform(0.01, 29.9), rng.choice(coffee_items))
        if rng.random() < 0.3:
            add(rng.uniform(-20, -0.01), rng.choice(coffee_items))  # before selection: not a conversion
        if rng.random() < 0.3:
            add(rng.uniform(31, 60), rng.choice(coffee_items))  # after the window
        if rng.random() < 0.3:
            add(rng.uniform(0.01, 29.9), rng.choice(other_items))  # another group
        if rng.random() < 0.3:
            add(rng.uniform(0.01, 29.9), rng.choice(coffee_items), "view")  # not a purchase
    return rows


def test_uplift_finds_an_effect_and_covers_zero_without_one(world, tmp_path, chdb_dsn, capsys):
    settings = make_settings(tmp_path, world, chdb_dsn)
    catalog = app.load_catalog(settings)
    coffee = catalog.items_of("coffee")
    others = sorted(set(catalog.items_of("snacks")) - set(coffee))
    users = [f"c{i}" for i in range(12_000)]
    scores = _scores(settings, users, "coffee", 1, seed=3)
    _cli(
        settings,
        world,
        capsys,
        "segment",
        "--campaign",
        "promo",
        "--group",
        "coffee",
        "--min-score",
        "0",
        "--holdout",
        "0.2",
    )
    # Targeted customers of "promo" convert at 30 %, held-out ones at 20 %. "placebo" is another campaign over the
    # same customers and events: its holdout is independent of promo's, so it must see no effect.
    _cli(
        settings,
        world,
        capsys,
        "segment",
        "--campaign",
        "placebo",
        "--group",
        "coffee",
        "--min-score",
        "0",
        "--holdout",
        "0.2",
    )
    rng = random.Random(11)
    held = [u for u in users if holdout_flag("promo", u, 0.2)]
    targeted = [u for u in users if not holdout_flag("promo", u, 0.2)]
    events = _purchases(targeted, coffee, others, T0, rng, 0.30) + _purchases(held, coffee, others, T0, rng, 0.20)
    _insert(settings, EVENTS, events)

    promo = json.loads(_cli(settings, world, capsys, "uplift", "--campaign", "promo", "--window", "30d", "--json"))
    placebo = json.loads(_cli(settings, world, capsys, "uplift", "--campaign", "placebo", "--json"))
    # A recount of conversions straight from the generated events.
    converted = {
        u for u, item, kind, ts, *_ in events if kind == "purchase" and item in coffee and T0 < ts <= T0 + timedelta(30)
    }
    for result, campaign in ((promo, "promo"), (placebo, "placebo")):
        out = [u for u in users if holdout_flag(campaign, u, 0.2)]
        t_users = [u for u in users if not holdout_flag(campaign, u, 0.2)]
        assert result["holdout"]["members"] == len(out) and result["targeted"]["members"] == len(t_users)
        assert result["holdout"]["converted"] == len(converted & set(out))
        assert result["targeted"]["converted"] == len(converted & set(t_users))
        assert result["targeted"]["expected"] == pytest.approx(np.mean([scores[u] for u in t_users]))
    for name, r in (("promo", promo), ("placebo", placebo)):  # the figures, for the record (UPLIFT_LOG=path)
        if os.environ.get("UPLIFT_LOG"):
            with open(os.environ["UPLIFT_LOG"], "a") as f:
                f.write(json.dumps({"campaign": name, **r}) + "\n")
    assert 0 < promo["low"] < promo["uplift"] < promo["high"]  # ~0.10 found, interval excludes 0
    assert promo["low"] < 0.10 < promo["high"]
    assert placebo["low"] < 0 < placebo["high"]  # no effect: the interval covers 0
    text = _cli(settings, world, capsys, "uplift", "--campaign", "promo")
    assert "uplift +" in text and "targeted" in text and "holdout" in text


def test_segment_as_of_answers_from_score_history(world, tmp_path, chdb_dsn, capsys):
    settings = make_settings(tmp_path, world, chdb_dsn)
    rng = random.Random(5)
    history = []
    for i in range(300):
        u = f"a{i}"
        for k in range(rng.randrange(1, 6)):
            at = T0 + timedelta(hours=rng.randrange(0, 24 * 20))
            ms = int(at.timestamp() * 1000)
            history.append([u, "coffee", round(rng.random(), 6), 1 + k % 2, at, row_version(ms, k)])
    _insert(settings, SCORE_HISTORY, history)
    _insert(settings, SCORES, [history[0]])  # the group has scores (now)
    when = T0 + timedelta(days=9, hours=7)

    def as_of(*selection: str) -> list[dict]:
        args = ("segment", "--group", "coffee", *selection, "--as-of", when.isoformat(), "--format", "json")
        return json.loads(_cli(settings, world, capsys, *args))

    got = as_of("--min-score", "0.5")
    last: dict[str, tuple] = {}
    for u, _, s, v, at, ver in history:  # recount: the last score at or before `when`
        if at <= when and (u not in last or (at, ver) > last[u][2]):
            last[u] = (s, v, (at, ver))
    want = sorted(((u, s, v) for u, (s, v, _) in last.items() if s >= 0.5), key=lambda r: (-r[1], r[0]))
    assert [(r["user_id"], r["score"], r["model_version"]) for r in got] == want
    assert len(want) > 50
    top = as_of("--top", "10")
    assert [r["user_id"] for r in top] == [
        u for u, _, _ in sorted(((u, s, v) for u, (s, v, _) in last.items()), key=lambda r: (-r[1], r[0]))
    ][:10]


def test_score_history_retention_is_a_ttl_applied_to_existing_stores(world, tmp_path, chdb_dsn, capsys):
    settings = make_settings(tmp_path, world, chdb_dsn)
    app.client_for(settings)  # an existing store, made without retention
    db = settings.clickhouse.database
    old, new = datetime(2017, 1, 1, tzinfo=UTC), datetime.now(tz=UTC) - timedelta(days=2)
    _insert(settings, SCORE_HISTORY, [["u1", "coffee", 0.1, 1, old, 1], ["u1", "coffee", 0.2, 1, new, 2]])
    client = app.client_for(settings)
    assert apply_retention(client, db, 30) == "score_history keeps 30 days (TTL toDateTime(as_of) + toIntervalDay(30))"
    assert apply_retention(client, db, 30) is None  # already so
    engine = query(
        settings, f"SELECT engine_full FROM system.tables WHERE database = '{db}' AND name = 'score_history'"
    )
    assert "TTL toDateTime(as_of) + toIntervalDay(30)" in engine[0][0]
    client.command(f"OPTIMIZE TABLE {db}.score_history FINAL")
    assert query(settings, "SELECT score FROM {db}.score_history") == [(0.2,)]  # the 2017 row expired
    assert apply_retention(client, db, None) == "score_history is kept forever (TTL removed)"
    engine = query(
        settings, f"SELECT engine_full FROM system.tables WHERE database = '{db}' AND name = 'score_history'"
    )
    assert " TTL " not in engine[0][0]
    # `propstream init` (a process of its own: it opens and migrates the store once) applies the setting.
    app._migrated.discard((settings.dsn, db))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROPSTREAM_CLICKHOUSE__SCORE_HISTORY_TTL_DAYS", "400")
        _cli(settings, world, capsys, "init")
    engine = query(
        settings, f"SELECT engine_full FROM system.tables WHERE database = '{db}' AND name = 'score_history'"
    )
    assert "toIntervalDay(400)" in engine[0][0]
