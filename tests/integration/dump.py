"""Print the final state of a propstream database as JSON (run in its own process).

Only one process may open a chDB path, so tests that ran the stream in
subprocesses read the results back through this module, also in a subprocess:

    python -m tests.integration.dump [--values | --schema] chdb:///path [database]

Every table a run writes (trending too, empty unless enabled) is read with FINAL, keyed the way its engine
replaces rows, and carries the version that decides which row wins. Runs of
several processes (one chDB each here; one server in production) are merged
by ``merge`` with the same rule a shared ReplacingMergeTree applies, and
``values`` drops what legitimately differs between two correct runs: the
versions and as-of times of refreshes, which follow how batches were cut.
``score_history`` keeps a row for every batch a score changed in, so only its
last score per customer and group is compared.
"""

from __future__ import annotations

import json
import sys

import clickhouse_connect

TABLES = ("features", "scores", "score_history", "events", "dead_letters", "item_activity", "trending")


def dump(dsn: str, db: str = "propstream") -> dict:
    client = clickhouse_connect.get_client(dsn=dsn)

    def rows(sql: str) -> list:
        return client.query(sql.format(db=db)).result_rows

    # a store made before migration 3 (tests/integration/test_schema.py) has no trending table: nothing in it
    present = {name for (name,) in rows("SELECT name FROM system.tables WHERE database = '{db}'")}

    return {
        "features": {
            u: [v, dict(f)] for u, v, f in rows("SELECT user_id, version, features FROM {db}.customer_features FINAL")
        },
        "scores": {
            f"{u}|{g}": [v, s, m]
            for u, g, v, s, m in rows("SELECT user_id, group_id, version, score, model_version FROM {db}.scores FINAL")
        },
        "score_history": {
            f"{u}|{g}": [v, s, m]
            for u, g, v, s, m in rows(
                "SELECT user_id, group_id, max(version), argMax(score, version), argMax(model_version, version) "
                "FROM {db}.score_history FINAL GROUP BY user_id, group_id"
            )
        },
        "events": {
            f"{u}|{ts}|{e}": [i, t, q, v, src]
            for u, ts, e, i, t, q, v, src in rows(
                "SELECT user_id, toUnixTimestamp64Milli(ts), event_id, item_id, type, quantity, value, source "
                "FROM {db}.events FINAL"
            )
        },
        "dead_letters": {
            f"{src}|{r}": p for src, r, p in rows("SELECT source, reason, payload FROM {db}.dead_letters FINAL")
        },
        "item_activity": {
            f"{h}|{i}|{t}|{sh}": [n, q, v]
            for h, i, t, sh, n, q, v in rows(
                "SELECT toUnixTimestamp(hour), item_id, type, shard, events, quantity, value "
                "FROM {db}.item_activity FINAL"
            )
        },
        "trending": {
            f"{w}|{sc}|{t}|{end}|{k}": [n, e, s, r, sr]
            for w, sc, t, end, k, n, e, s, r, sr in rows(
                "SELECT window, scope, type, toUnixTimestamp(window_end), key, count, expected, surge, rank, "
                "surge_rank FROM {db}.trending FINAL"
            )
        }
        if "trending" in present
        else {},
    }


def schema(client, db: str = "propstream") -> dict:
    """Each table's engine, sorting key and columns as the store has them, and its schema version."""
    tables = {
        name: {"engine_full": engine, "sorting_key": key, "columns": []}
        for name, engine, key in client.query(
            "SELECT name, engine_full, sorting_key FROM system.tables WHERE database = {db:String}",
            parameters={"db": db},
        ).result_rows
    }
    for table, name, type_, default in client.query(
        "SELECT table, name, type, default_expression FROM system.columns WHERE database = {db:String} "
        "ORDER BY table, position",
        parameters={"db": db},
    ).result_rows:
        tables[table]["columns"].append([name, type_, default or None])
    (version,) = client.query(f"SELECT max(version) FROM {db}.schema_migrations").result_rows[0]
    return {"tables": tables, "version": version}


def merge(dumps: list[dict]) -> dict:
    """Several stores as one ReplacingMergeTree would hold them: per key, the highest version wins.

    Item cells are versioned by their event count; the events archive and
    dead letters by their key alone.
    """
    versioned = ("features", "scores", "score_history", "item_activity")
    out: dict = {t: {} for t in TABLES}
    for d in dumps:
        for table in TABLES:
            merged = out[table]
            for key, row in d[table].items():
                old = merged.get(key)
                if old is None or (table in versioned and row[0] > old[0]):
                    merged[key] = row
    return out


def values(d: dict) -> dict:
    """What two correct runs over the same input must agree on."""
    return {
        "features": {u: f for u, (_, f) in d["features"].items()},
        "scores": {k: row[1:] for k, row in d["scores"].items()},
        "score_history_last": {k: row[1:] for k, row in d["score_history"].items()},
        "events": {k: row[:4] for k, row in d["events"].items()},  # source names the input (file line or offset)
        "event_sources": sorted(row[4] for row in d["events"].values()),
        "dead_letters": d["dead_letters"],
        "item_activity": d["item_activity"],
        "trending": d["trending"],
    }


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--schema"]:
        print(json.dumps(schema(clickhouse_connect.get_client(dsn=args[1]), *args[2:])))
        sys.exit()
    as_values = args[:1] == ["--values"]
    result = dump(*args[as_values:])
    print(json.dumps(values(result) if as_values else result))
