"""ClickHouse schema of database ``propstream`` (idempotent DDL).

Table and column names are a contract with dashboards and marketing's SQL
(see DESIGN.md). Upserted tables are ReplacingMergeTree with a deterministic
``version`` (event time, then per-customer sequence): read them with FINAL.
The events archive and dead letters are ReplacingMergeTree too, keyed by
event id and source position, so a replay after a crash does not duplicate
them.
"""

from __future__ import annotations

DATABASE = "propstream"

SCORE_COLUMNS = """
CREATE TABLE IF NOT EXISTS {{db}}.{table} (
    user_id String,
    group_id LowCardinality(String),
    score Float64,
    model_version UInt32,
    as_of DateTime64(3, 'UTC'),
    version UInt64
) ENGINE = ReplacingMergeTree(version)"""

TABLES: dict[str, str] = {
    "events": """
CREATE TABLE IF NOT EXISTS {db}.events (
    user_id String,
    item_id String,
    type LowCardinality(String),
    ts DateTime64(3, 'UTC'),
    event_id String,
    quantity Float64,
    value Float64,
    source String
) ENGINE = ReplacingMergeTree ORDER BY (user_id, ts, event_id)""",
    "customer_features": """
CREATE TABLE IF NOT EXISTS {db}.customer_features (
    user_id String,
    as_of DateTime64(3, 'UTC'),
    features Map(LowCardinality(String), Float64),
    version UInt64
) ENGINE = ReplacingMergeTree(version) ORDER BY user_id""",
    # scores keeps the latest row per (group, customer); score_history every change.
    "scores": SCORE_COLUMNS.format(table="scores") + " ORDER BY (group_id, user_id)",
    "score_history": SCORE_COLUMNS.format(table="score_history")
    + " ORDER BY (group_id, user_id, as_of, model_version)",
    "models": """
CREATE TABLE IF NOT EXISTS {db}.models (
    group_id LowCardinality(String),
    version UInt32,
    stage LowCardinality(String),
    metrics String,
    card String,
    created_at DateTime64(3, 'UTC'),
    updated_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(updated_at) ORDER BY (group_id, version)""",
    "dead_letters": """
CREATE TABLE IF NOT EXISTS {db}.dead_letters (
    reason String,
    payload String,
    source String,
    received_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree ORDER BY (source, reason)""",
    "item_activity": """
CREATE TABLE IF NOT EXISTS {db}.item_activity (
    hour DateTime('UTC'),
    item_id String,
    type LowCardinality(String),
    shard UInt16,
    events UInt64,
    quantity Float64,
    value Float64
) ENGINE = ReplacingMergeTree(events) ORDER BY (hour, item_id, type, shard)""",
}


def _column_names(sql: str) -> tuple[str, ...]:
    """The column names of one CREATE TABLE statement, in order."""
    body = sql[sql.index("(") + 1 : sql.index(") ENGINE")]
    return tuple(line.split()[0] for line in body.strip().splitlines())


# Derived from the DDL above, so a table's columns are spelled once; writers take their names from here
# (tests/schemas/test_tables.py fails when a writer and its table disagree).
COLUMNS: dict[str, tuple[str, ...]] = {table: _column_names(sql) for table, sql in TABLES.items()}


VERSION_SHIFT = 20  # version = as_of_ms << 20 | per-customer seq


def row_version(as_of_ms: int, seq: int) -> int:
    """Deterministic ReplacingMergeTree version (invariant 5): event time, then per-customer sequence.

    Never the wall clock at write time, so a replay writes the same versions.

    >>> row_version(1_000, 7) < row_version(1_000, 8) < row_version(1_001, 0)
    True
    """
    return (as_of_ms << VERSION_SHIFT) | (seq & ((1 << VERSION_SHIFT) - 1))


def ddl_statements(database: str = DATABASE) -> list[str]:
    """CREATE statements for the database and every table, safe to run twice."""
    return [f"CREATE DATABASE IF NOT EXISTS {database}"] + [sql.format(db=database).strip() for sql in TABLES.values()]
