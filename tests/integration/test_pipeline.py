"""The invariants of DESIGN.md, checked from outside: run the real Bytewax dataflow
into embedded ClickHouse (chDB) and compare what is stored with independent oracles.
"""

from __future__ import annotations

import json
import random
import shutil
import threading

import numpy as np
import pytest

from offline_train.dataset import replay_features
from propstream import app
from schemas.events import Event
from tests.integration.conftest import make_settings, write_events
from tests.integration.helpers import (
    assert_scores_current,
    query,
    run,
    state_config,
    stored_features,
    stored_scores,
)
from tests.synthetic import DAY_MS

pytestmark = pytest.mark.integration


def _records(settings, rows):
    return [Event.model_validate(r).to_record("x") for r in rows]


def _ts_ms(row) -> int:
    return Event.model_validate(row).ts_ms


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, world, trained_dir, chdb_dsn):
    """One in-order run over the whole synthetic log."""
    data_dir = tmp_path_factory.mktemp("clean")
    shutil.copytree(trained_dir / "models", data_dir / "models")
    settings = make_settings(data_dir, world, chdb_dsn)
    stats = run(settings, [write_events(data_dir / "events.jsonl", world.events)])
    return settings, stats


def test_conservation_every_input_is_applied_or_dead_lettered(clean_run, world):
    settings, stats = clean_run
    events = query(settings, "SELECT count() FROM {db}.events FINAL")[0][0]
    dead = query(settings, "SELECT count() FROM {db}.dead_letters FINAL")[0][0]
    assert stats.events_in == len(world.events)
    assert events + dead == len(world.events)
    assert stats.applied == events and stats.dead_letters == dead


def test_one_score_per_customer_and_group(clean_run, world):
    settings, _ = clean_run
    users = {e["user_id"] for e in world.events}
    groups = state_config(settings).spec.groups
    scores = stored_scores(settings)
    assert set(scores) == {(u, g) for u in users for g in groups}


def test_parity_stream_features_equal_offline_replay_at_end(clean_run, world):
    settings, _ = clean_run
    cfg = state_config(settings)
    end = max(_ts_ms(e) for e in world.events)
    offline = replay_features(_records(settings, world.events), cfg, app.load_catalog(settings), [end])[end]
    stream = stored_features(settings)
    assert set(stream) == set(offline)
    for user, row in offline.items():
        np.testing.assert_array_equal(stream[user], row, err_msg=user)


def test_windows_expire_without_new_events(clean_run, world):
    """A customer silent for the last week has zero 7d counts, though it had events before."""
    settings, _ = clean_run
    end = max(_ts_ms(e) for e in world.events)
    last = {}
    for e in world.events:
        last[e["user_id"]] = _ts_ms(e)
    silent = [u for u, t in last.items() if end - t > 8 * DAY_MS]
    assert silent, "the synthetic world should have a customer silent for over a week"
    index = state_config(settings).spec.index
    name = "grp=all|type={}|stat=count|win=7d"
    stream = stored_features(settings)
    for u in silent:
        assert all(stream[u][index[name.format(t)]] == 0 for t in ("view", "cart", "purchase"))


def test_no_stale_score_every_score_is_the_production_model_on_stored_features(clean_run):
    settings, _ = clean_run
    assert_scores_current(settings)


def test_score_history_lets_a_score_be_read_as_of_a_past_moment(clean_run):
    settings, _ = clean_run
    rows = query(
        settings,
        "SELECT user_id, group_id, count() AS n, argMax(score, as_of) FROM {db}.score_history FINAL "
        "GROUP BY user_id, group_id",
    )
    scores = stored_scores(settings)
    assert max(n for _, _, n, _ in rows) > 1  # scores moved over time
    for user, group, _, latest in rows:
        assert scores[(user, group)][0] == latest


def test_order_and_duplicate_invariance(clean_run, world, tmp_path, chdb_dsn):
    """Shuffling within the allowed lateness and redelivering events changes no final state."""
    settings, _ = clean_run
    rng = random.Random(3)
    events = list(world.events)
    # Shuffle inside 6-hour blocks (allowed lateness is 24 h) and redeliver 5% of events.
    blocks: dict[int, list] = {}
    for e in events:
        blocks.setdefault(_ts_ms(e) // (6 * 3_600_000), []).append(e)
    shuffled = []
    for k in sorted(blocks):
        b = blocks[k]
        rng.shuffle(b)
        shuffled += b
    dups = rng.sample(events, len(events) // 20)
    for d in dups:
        shuffled.insert(rng.randrange(len(shuffled)), d)
    # A redelivered copy may land before its original, as long as it stays within lateness.
    shuffled.sort(key=lambda e: _ts_ms(e) // (6 * 3_600_000))
    data_dir = tmp_path / "shuffled"
    shutil.copytree(settings.models_dir, data_dir / "models")
    other = make_settings(data_dir, world, chdb_dsn)
    stats = run(other, [write_events(tmp_path / "shuffled.jsonl", shuffled)])
    assert stats.dead_letters == len(dups)
    reasons = query(other, "SELECT reason FROM {db}.dead_letters FINAL")
    assert all(r.startswith("duplicate") for (r,) in reasons)
    a, b = stored_features(settings), stored_features(other)
    assert a.keys() == b.keys()
    for u in a:
        np.testing.assert_array_equal(a[u], b[u], err_msg=u)
    assert stored_scores(settings) == stored_scores(other)


def test_a_store_that_refuses_inserts_for_a_while_changes_nothing(clean_run, world, tmp_path, chdb_dsn, caplog):
    """ClickHouse refusing the score inserts (TOO_MANY_PARTS) for 2 s: the sink tries again, nothing is lost."""
    settings, _ = clean_run
    data_dir = tmp_path / "refused"
    shutil.copytree(settings.models_dir, data_dir / "models")
    other = make_settings(data_dir, world, chdb_dsn, sink_flush_seconds=0)  # an insert per batch, as with recovery
    client = app.client_for(other)  # the store, migrated, before the run
    table = f"{other.clickhouse.database}.scores"
    client.command(f"SYSTEM STOP MERGES {table}")
    client.command(f"ALTER TABLE {table} MODIFY SETTING parts_to_throw_insert = 2, parts_to_delay_insert = 100")

    def recover() -> None:
        client.command(f"ALTER TABLE {table} MODIFY SETTING parts_to_throw_insert = 3000, parts_to_delay_insert = 1000")
        client.command(f"SYSTEM START MERGES {table}")

    store_back = threading.Timer(2.0, recover)
    store_back.start()
    try:
        stats = run(other, [write_events(tmp_path / "events.jsonl", world.events)])
    finally:
        store_back.cancel()
        store_back.join()
    assert any("insert into scores failed, trying again" in r.getMessage() for r in caplog.records)
    assert stats.events_in == len(world.events) and stats.dead_letters == 0
    events = query(other, "SELECT count() FROM {db}.events FINAL")[0][0]
    assert events == len(world.events)
    a, b = stored_features(settings), stored_features(other)
    assert a.keys() == b.keys()
    for u in a:
        np.testing.assert_array_equal(a[u], b[u], err_msg=u)
    assert stored_scores(other) == stored_scores(settings)
    assert_scores_current(other)


BAD_LINES = [
    "{not json",
    "[1, 2, 3]",
    "42",
    '"just a string"',
    json.dumps({"user_id": "u1", "item_id": "i1", "type": "purchase"}),  # no timestamp
    json.dumps({"user_id": {"a": 1}, "item_id": "i1", "type": "view", "timestamp": "2017-02-01T00:00:00Z"}),
    json.dumps({"user_id": None, "item_id": "i1", "type": "view", "timestamp": "2017-02-01T00:00:00Z"}),
    json.dumps({"user_id": "x" * 100_000, "item_id": "i1", "type": "view", "timestamp": "2017-02-01T00:00:00Z"}),
    '{"user_id": "u1", "item_id": "i1", "type": "cart", "timestamp": "2017-02-01T00:00:00Z", "value": NaN}',
    json.dumps({"user_id": "u1", "item_id": "i1", "type": "view", "timestamp": "yesterday-ish"}),
    json.dumps({"user_id": "u1", "item_id": "i1", "type": "view", "timestamp": "1970-01-01T00:00:00Z"}),
    json.dumps({"user_id": "u1", "item_id": "i1", "type": "view", "timestamp": "2999-01-01T00:00:00Z"}),
    json.dumps({"user_id": "u1", "item_id": "i1", "type": "teleport", "timestamp": "2017-02-01T00:00:00Z"}),
    json.dumps(
        {"user_id": "u1", "item_id": "i1", "type": "view", "timestamp": "2017-02-01T00:00:00Z", "quantity": "lots"}
    ),
]


def test_bad_input_goes_to_dead_letters_and_changes_nothing_else(clean_run, world, tmp_path, chdb_dsn):
    settings, _ = clean_run
    rng = random.Random(5)
    lines: list = list(world.events)
    for bad in BAD_LINES:
        lines.insert(rng.randrange(len(lines)), bad)
    data_dir = tmp_path / "bad"
    shutil.copytree(settings.models_dir, data_dir / "models")
    other = make_settings(data_dir, world, chdb_dsn)
    path = write_events(tmp_path / "with_bad.jsonl", lines)
    stats = run(other, [path])
    assert stats.events_in == len(lines)
    dead = query(other, "SELECT reason, payload, source FROM {db}.dead_letters FINAL")
    assert len(dead) == len(BAD_LINES)
    assert sorted(p for _, p, _ in dead) == sorted(BAD_LINES)
    assert all(r and s.startswith(str(path)) for r, _, s in dead)
    assert stored_features(other).keys() == stored_features(settings).keys()
    assert stored_scores(other) == stored_scores(settings)


def _parquet(path, rows: list[dict]):
    """The contract's columns as Parquet: an Arrow timestamp column and typed numbers (the columnar path)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ts = [r["timestamp"] if isinstance(r["timestamp"], int) else _ts_ms(r) for r in rows]
    table = pa.table(
        {
            "user_id": pa.array([r["user_id"] for r in rows], pa.string()),
            "item_id": pa.array([r["item_id"] for r in rows], pa.string()),
            "type": pa.array([r["type"] for r in rows], pa.string()),
            "timestamp": pa.array(ts, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            "event_id": pa.array([r["event_id"] for r in rows], pa.string()),
            "quantity": pa.array([float(r["quantity"]) for r in rows], pa.float64()),
            "value": pa.array([r["value"] for r in rows], pa.float64()),
        }
    )
    pq.write_table(table, path, row_group_size=700)  # batches cross row groups
    return path


def test_parquet_replay_equals_jsonl_and_dead_letters_its_bad_rows(clean_run, world, tmp_path, chdb_dsn):
    """The columnar path end to end: same features and scores as the JSONL run; bad rows dead-lettered."""
    settings, _ = clean_run
    ok = {"user_id": "u1", "item_id": "i1", "type": "view", "event_id": "bad", "quantity": 1, "value": 0.0}
    bad = [
        {**ok, "user_id": None, "timestamp": 1_490_000_000_000},
        {**ok, "user_id": " ", "timestamp": 1_490_000_000_000},
        {**ok, "type": "teleport", "timestamp": 1_490_000_000_000},
        {**ok, "value": float("nan"), "timestamp": 1_490_000_000_000},
        {**ok, "quantity": -1, "timestamp": 1_490_000_000_000},
        {**ok, "timestamp": 631_152_000_000},  # 1990: before the accepted range
        {**ok, "timestamp": 10**16},  # beyond what Python's datetime can hold
    ]
    rng = random.Random(11)
    rows = list(world.events)
    at = sorted(rng.sample(range(len(rows)), len(bad)))
    for k, i in enumerate(at):
        rows.insert(i + k, bad[k])
    data_dir = tmp_path / "parquet"
    shutil.copytree(settings.models_dir, data_dir / "models")
    other = make_settings(data_dir, world, chdb_dsn)
    path = _parquet(tmp_path / "events.parquet", rows)
    stats = run(other, [path])
    assert stats.events_in == len(rows) and stats.dead_letters == len(bad)
    dead = query(other, "SELECT reason, source FROM {db}.dead_letters FINAL ORDER BY source")
    sources = {f"{path}:row{i + k + 1}" for k, i in enumerate(at)}
    assert {s for _, s in dead} == sources
    assert all(r for r, _ in dead)
    a, b = stored_features(settings), stored_features(other)
    assert a.keys() == b.keys()
    for u in a:
        np.testing.assert_array_equal(a[u], b[u], err_msg=u)
    assert stored_scores(other) == stored_scores(settings)


@pytest.mark.parametrize("cut_day", [20, 61, 110])
def test_parity_at_several_as_of_times(world, trained_dir, tmp_path, chdb_dsn, cut_day):
    """The stream stopped at T holds exactly the offline replay's features at T."""
    t0 = _ts_ms(world.events[0])
    prefix = [e for e in world.events if _ts_ms(e) <= t0 + cut_day * DAY_MS]
    settings = make_settings(tmp_path, world, chdb_dsn)
    run(settings, [write_events(tmp_path / "prefix.jsonl", prefix)])
    cfg = state_config(settings)
    t = max(_ts_ms(e) for e in prefix)
    offline = replay_features(_records(settings, prefix), cfg, app.load_catalog(settings), [t])[t]
    stream = stored_features(settings)
    assert stream.keys() == offline.keys()
    for u in offline:
        np.testing.assert_array_equal(stream[u], offline[u], err_msg=u)
    as_of = query(settings, "SELECT max(toUnixTimestamp64Milli(as_of)) FROM {db}.customer_features FINAL")[0][0]
    assert as_of == t
