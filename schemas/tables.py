"""The ClickHouse tables of database ``propstream``: one owner for names, columns, engines, keys and migrations.

Table and column names are a contract with dashboards and marketing's SQL
(see DESIGN.md). Writers take column names from ``Table.inserted`` and
readers take table names from here; ``tests/schemas/test_tables.py`` fails
when a writer and its table disagree, and ``tests/integration/test_schema.py``
when the store that ``MIGRATIONS`` build differs from the tables declared
here.

Upserted tables are ReplacingMergeTree with a deterministic ``version``
(``row_version``: event time, then per-customer sequence): read them with
FINAL. The events archive and dead letters are ReplacingMergeTree too, keyed
by event id and source position, so a replay after a crash does not
duplicate them.

A store is brought up to date by ``MIGRATIONS``, applied in order and
recorded in ``schema_migrations`` (``stream.sinks.clickhouse.migrate``, run by
``propstream init`` and by every command that opens the store). Every
statement is idempotent (``IF NOT EXISTS``), so a store made before versions
were recorded, or two processes migrating at once, come out the same. To
change a table: edit its declaration below and append a migration that
brings an existing store to it; never edit a released migration.

>>> SCORES.inserted
('user_id', 'group_id', 'score', 'model_version', 'as_of', 'version')
>>> SCORES.at("propstream")
'propstream.scores'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

DATABASE = "propstream"


class Column(NamedTuple):
    """A column: its name, ClickHouse type, and a default the server fills in (writers leave it out)."""

    name: str
    type: str
    default: str | None = None


@dataclass(frozen=True)
class Table:
    """One table as the current schema version has it."""

    name: str
    columns: tuple[Column, ...]
    engine: str  # as in CREATE TABLE, e.g. "ReplacingMergeTree(version)"
    order_by: tuple[str, ...]
    doc: str

    @property
    def names(self) -> tuple[str, ...]:
        """Every column name, in table order."""
        return tuple(c.name for c in self.columns)

    @property
    def types(self) -> dict[str, str]:
        """Each column's ClickHouse type by name (writers pass them: no type query before an insert)."""
        return {c.name: c.type for c in self.columns}

    @property
    def inserted(self) -> tuple[str, ...]:
        """The columns a writer supplies (all but those the server fills in)."""
        return tuple(c.name for c in self.columns if c.default is None)

    @property
    def replacing(self) -> tuple[tuple[str, ...], str] | None:
        """(key, version column) if a row replaces an older one of the same ``order_by`` key by its version.

        ``ReplacingMergeTree(col)`` keeps, per key, the row with the largest
        ``col`` (the last inserted of equals); FINAL reads only those.

        >>> CUSTOMER_FEATURES.replacing, EVENTS.replacing
        ((('user_id',), 'version'), None)
        """
        engine, _, column = self.engine.partition("(")
        return (self.order_by, column.removesuffix(")")) if engine == "ReplacingMergeTree" and column else None

    def at(self, database: str = DATABASE) -> str:
        """The qualified name for SQL."""
        return f"{database}.{self.name}"


_SCORE_COLUMNS = (
    Column("user_id", "String"),
    Column("group_id", "LowCardinality(String)"),
    Column("score", "Float64"),
    Column("model_version", "UInt32"),
    Column("as_of", "DateTime64(3, 'UTC')"),
    Column("version", "UInt64"),
    Column("written_at", "DateTime64(3, 'UTC')", "now64(3)"),
)

EVENTS = Table(
    "events",
    (
        Column("user_id", "String"),
        Column("item_id", "String"),
        Column("type", "LowCardinality(String)"),
        Column("ts", "DateTime64(3, 'UTC')"),
        Column("event_id", "String"),
        Column("quantity", "Float64"),
        Column("value", "Float64"),
        Column("source", "String"),
    ),
    "ReplacingMergeTree",
    ("user_id", "ts", "event_id"),
    "validated events archive (training from the archive, backfills)",
)
CUSTOMER_FEATURES = Table(
    "customer_features",
    (
        Column("user_id", "String"),
        Column("as_of", "DateTime64(3, 'UTC')"),
        Column("features", "Map(LowCardinality(String), Float64)"),
        Column("version", "UInt64"),
    ),
    "ReplacingMergeTree(version)",
    ("user_id",),
    "latest feature vector per customer",
)
SCORES = Table(
    "scores",
    _SCORE_COLUMNS,
    "ReplacingMergeTree(version)",
    ("group_id", "user_id"),
    "latest calibrated score per group and customer; written_at: when the row reached ClickHouse",
)
SCORE_HISTORY = Table(
    "score_history",
    _SCORE_COLUMNS,
    "ReplacingMergeTree(version)",
    ("group_id", "user_id", "as_of", "model_version"),
    "every change of a score; written_at: when the score became visible in scores (the sink writes this table "
    "behind, and stamps each row with the time its scores' insert into scores returned)",
)
MODELS = Table(
    "models",
    (
        Column("group_id", "LowCardinality(String)"),
        Column("version", "UInt32"),
        Column("stage", "LowCardinality(String)"),
        Column("metrics", "String"),
        Column("card", "String"),
        Column("created_at", "DateTime64(3, 'UTC')"),
        Column("updated_at", "DateTime64(3, 'UTC')"),
        Column("changed_by", "String"),
        Column("change_reason", "String"),
        Column("changed_at", "Nullable(DateTime64(3, 'UTC'))"),
    ),
    "ReplacingMergeTree(updated_at)",
    ("group_id", "version"),
    "model cards and stages (written by `propstream train` and `propstream models`); changed_by / change_reason / "
    "changed_at: the last promotion or rollback that moved this version in or out of production (the registry's "
    "actions.jsonl holds every one)",
)
CAMPAIGN_MEMBERS = Table(
    "campaign_members",
    (
        Column("campaign", "String"),
        Column("user_id", "String"),
        Column("group_id", "LowCardinality(String)"),
        Column("score", "Float64"),
        Column("model_version", "UInt32"),
        Column("holdout", "Bool"),
        Column("holdout_share", "Float64"),
        Column("selected_at", "DateTime64(3, 'UTC')"),
        Column("selection", "String"),
        Column("created_at", "DateTime64(3, 'UTC')"),
    ),
    "ReplacingMergeTree(created_at)",
    ("campaign", "user_id"),
    "a campaign's audience (`propstream segment --campaign`): score and model at selection, holdout flag (stable "
    "hash of customer and campaign), selected_at = the scores' as-of time the audience was chosen at",
)
DEAD_LETTERS = Table(
    "dead_letters",
    (
        Column("reason", "String"),
        Column("payload", "String"),
        Column("source", "String"),
        Column("received_at", "DateTime64(3, 'UTC')"),
    ),
    "ReplacingMergeTree",
    ("source", "reason"),
    "inputs not applied: reason, raw payload, source position",
)
ITEM_ACTIVITY = Table(
    "item_activity",
    (
        Column("hour", "DateTime('UTC')"),
        Column("item_id", "String"),
        Column("type", "LowCardinality(String)"),
        Column("shard", "UInt16"),
        Column("events", "UInt64"),
        Column("quantity", "Float64"),
        Column("value", "Float64"),
    ),
    "ReplacingMergeTree(events)",
    ("hour", "item_id", "type", "shard"),
    "per item, event hour and type: cumulative counts (sum over shards)",
)
TRENDING = Table(
    "trending",
    (
        Column("window_end", "DateTime('UTC')"),
        Column("window", "LowCardinality(String)"),
        Column("scope", "LowCardinality(String)"),
        Column("key", "String"),
        Column("type", "LowCardinality(String)"),
        Column("count", "UInt64"),
        Column("expected", "Float64"),
        Column("surge", "Float64"),
        Column("rank", "UInt32"),
        Column("surge_rank", "UInt32"),
    ),
    "ReplacingMergeTree",
    ("window", "scope", "type", "window_end", "key"),
    "per closed event-time window, scope (item / group) and type: the top N by count (rank) and by surge "
    "(surge_rank: -log10 Poisson tail of count under the forecast `expected`); 0 = not in that top N. "
    "Final once written: a replay writes the same rows",
)
DRIFT_EVENTS = Table(
    "drift_events",
    (
        Column("group_id", "LowCardinality(String)"),
        Column("signal", "LowCardinality(String)"),
        Column("detector", "LowCardinality(String)"),
        Column("bucket", "DateTime64(3, 'UTC')"),
        Column("known_at", "DateTime64(3, 'UTC')"),
        Column("value", "Float64"),
        Column("rows", "UInt64"),
        Column("estimate", "Float64"),
    ),
    "ReplacingMergeTree",
    ("group_id", "signal", "detector", "bucket"),
    "`propstream monitor`: a river detector's alarm on a group's per-bucket series (signal `score`: mean served "
    "score; `outcome`: realised rate of matured scores); bucket: the as-of bucket that tripped it; known_at: when "
    "the data showed it (outcome: bucket end + label horizon); estimate: the detector's mean after the change",
)
LIVE_CALIBRATION = Table(
    "live_calibration",
    (
        Column("group_id", "LowCardinality(String)"),
        Column("window_end", "DateTime64(3, 'UTC')"),
        Column("window_days", "UInt16"),
        Column("bin", "UInt8"),
        Column("predicted", "Float64"),
        Column("realised", "Float64"),
        Column("rows", "UInt64"),
        Column("ece", "Float64"),
    ),
    "ReplacingMergeTree",
    ("group_id", "window_days", "window_end", "bin"),
    "`propstream monitor`: per group and rolling window of matured scores (as-of in [end - days, end)), per "
    "probability decile (bin 0..9): mean predicted, realised rate, rows; ece: the window's expected calibration error",
)
SCHEMA_MIGRATIONS = Table(
    "schema_migrations",
    (
        Column("version", "UInt32"),
        Column("description", "String"),
        Column("applied_at", "DateTime64(3, 'UTC')"),
    ),
    "ReplacingMergeTree",
    ("version",),
    "which migrations the store has had",
)

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        EVENTS,
        CUSTOMER_FEATURES,
        SCORES,
        SCORE_HISTORY,
        MODELS,
        DEAD_LETTERS,
        ITEM_ACTIVITY,
        TRENDING,
        CAMPAIGN_MEMBERS,
        DRIFT_EVENTS,
        LIVE_CALIBRATION,
    )
}
SCORE_TABLES = (SCORES, SCORE_HISTORY)  # every score row goes to both
# Column names a writer supplies, per table (the stream's records name their fields the same way).
COLUMNS: dict[str, tuple[str, ...]] = {name: t.inserted for name, t in TABLES.items()}


@dataclass(frozen=True)
class Migration:
    """One step of the schema: idempotent statements (``{db}`` is the database)."""

    version: int
    description: str
    statements: tuple[str, ...]


_V1_SCORES = """CREATE TABLE IF NOT EXISTS {{db}}.{table} (
    user_id String,
    group_id LowCardinality(String),
    score Float64,
    model_version UInt32,
    as_of DateTime64(3, 'UTC'),
    version UInt64
) ENGINE = ReplacingMergeTree(version) ORDER BY {order}"""

# The stream inserts into these several times a second, a few thousand rows each time: ClickHouse's default merge
# selector (base 5) rewrote every row ~8 levels deep; base 10 merges more parts at once, in ~4 levels.
CONTINUOUSLY_WRITTEN = ("events", "customer_features", "scores", "score_history", "item_activity")
WIDE_MERGES = "merge_selector_base = 10"

# Released migrations are history: append, never edit. Every statement can run twice (IF NOT EXISTS, or a
# MODIFY SETTING to a fixed value).
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "the tables as stores made before schema versions have them",
        (
            """CREATE TABLE IF NOT EXISTS {db}.events (
    user_id String,
    item_id String,
    type LowCardinality(String),
    ts DateTime64(3, 'UTC'),
    event_id String,
    quantity Float64,
    value Float64,
    source String
) ENGINE = ReplacingMergeTree ORDER BY (user_id, ts, event_id)""",
            """CREATE TABLE IF NOT EXISTS {db}.customer_features (
    user_id String,
    as_of DateTime64(3, 'UTC'),
    features Map(LowCardinality(String), Float64),
    version UInt64
) ENGINE = ReplacingMergeTree(version) ORDER BY user_id""",
            _V1_SCORES.format(table="scores", order="(group_id, user_id)"),
            _V1_SCORES.format(table="score_history", order="(group_id, user_id, as_of, model_version)"),
            """CREATE TABLE IF NOT EXISTS {db}.models (
    group_id LowCardinality(String),
    version UInt32,
    stage LowCardinality(String),
    metrics String,
    card String,
    created_at DateTime64(3, 'UTC'),
    updated_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(updated_at) ORDER BY (group_id, version)""",
            """CREATE TABLE IF NOT EXISTS {db}.dead_letters (
    reason String,
    payload String,
    source String,
    received_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree ORDER BY (source, reason)""",
            """CREATE TABLE IF NOT EXISTS {db}.item_activity (
    hour DateTime('UTC'),
    item_id String,
    type LowCardinality(String),
    shard UInt16,
    events UInt64,
    quantity Float64,
    value Float64
) ENGINE = ReplacingMergeTree(events) ORDER BY (hour, item_id, type, shard)""",
        ),
    ),
    Migration(
        2,
        "scores and score_history record when each row reached ClickHouse (written_at), to measure freshness",
        tuple(
            f"ALTER TABLE {{db}}.{t} ADD COLUMN IF NOT EXISTS written_at DateTime64(3, 'UTC') DEFAULT now64(3)"
            for t in ("scores", "score_history")
        ),
    ),
    Migration(
        3,
        "trending: popularity and surge of items and groups per closed event-time window (issue #12)",
        (
            """CREATE TABLE IF NOT EXISTS {db}.trending (
    window_end DateTime('UTC'),
    window LowCardinality(String),
    scope LowCardinality(String),
    key String,
    type LowCardinality(String),
    count UInt64,
    expected Float64,
    surge Float64,
    rank UInt32,
    surge_rank UInt32
) ENGINE = ReplacingMergeTree ORDER BY (window, scope, type, window_end, key)""",
        ),
    ),
    Migration(
        4,
        "models: who moved a version in or out of production, why and when (issue #14)",
        (
            "ALTER TABLE {db}.models ADD COLUMN IF NOT EXISTS changed_by String",
            "ALTER TABLE {db}.models ADD COLUMN IF NOT EXISTS change_reason String",
            "ALTER TABLE {db}.models ADD COLUMN IF NOT EXISTS changed_at Nullable(DateTime64(3, 'UTC'))",
        ),
    ),
    Migration(
        5,
        "campaign_members: campaign audiences with a deterministic holdout flag (issue #14)",
        (
            """CREATE TABLE IF NOT EXISTS {db}.campaign_members (
    campaign String,
    user_id String,
    group_id LowCardinality(String),
    score Float64,
    model_version UInt32,
    holdout Bool,
    holdout_share Float64,
    selected_at DateTime64(3, 'UTC'),
    selection String,
    created_at DateTime64(3, 'UTC')
) ENGINE = ReplacingMergeTree(created_at) ORDER BY (campaign, user_id)""",
        ),
    ),
    Migration(
        6,
        "model monitoring: drift events and live calibration per group (issue #14, `propstream monitor`)",
        (
            """CREATE TABLE IF NOT EXISTS {db}.drift_events (
    group_id LowCardinality(String),
    signal LowCardinality(String),
    detector LowCardinality(String),
    bucket DateTime64(3, 'UTC'),
    known_at DateTime64(3, 'UTC'),
    value Float64,
    rows UInt64,
    estimate Float64
) ENGINE = ReplacingMergeTree ORDER BY (group_id, signal, detector, bucket)""",
            """CREATE TABLE IF NOT EXISTS {db}.live_calibration (
    group_id LowCardinality(String),
    window_end DateTime64(3, 'UTC'),
    window_days UInt16,
    bin UInt8,
    predicted Float64,
    realised Float64,
    rows UInt64,
    ece Float64
) ENGINE = ReplacingMergeTree ORDER BY (group_id, window_days, window_end, bin)""",
        ),
    ),
    Migration(
        7,
        "the tables the stream writes all the time merge wider parts at once (merge_selector_base 10, was 5): "
        "a third less merge CPU under small inserts, a few more active parts (BENCHMARKS 6j)",
        tuple(f"ALTER TABLE {{db}}.{t} MODIFY SETTING {WIDE_MERGES}" for t in CONTINUOUSLY_WRITTEN),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1].version


def score_history_ttl(days: int | None) -> str | None:
    """The TTL expression of ``score_history`` for a retention of ``days`` (None: kept forever).

    A setting, not a migration: it differs between stores, and is applied by
    ``stream.sinks.clickhouse.apply_retention`` whenever a store is opened.

    >>> score_history_ttl(90)
    'toDateTime(as_of) + toIntervalDay(90)'
    """
    return None if days is None else f"toDateTime(as_of) + toIntervalDay({int(days)})"


def create_table_ddl(t: Table, database: str = DATABASE, name: str | None = None, settings: str = "") -> str:
    """``CREATE TABLE IF NOT EXISTS`` for a declared table (optionally under another ``name``, with ``settings``).

    >>> print(create_table_ddl(SCHEMA_MIGRATIONS, "db"))  # doctest: +NORMALIZE_WHITESPACE
    CREATE TABLE IF NOT EXISTS db.schema_migrations (
        version UInt32,
        description String,
        applied_at DateTime64(3, 'UTC')
    ) ENGINE = ReplacingMergeTree ORDER BY version
    """
    cols = ",\n    ".join(f"{c.name} {c.type}{f' DEFAULT {c.default}' if c.default else ''}" for c in t.columns)
    order = t.order_by[0] if len(t.order_by) == 1 else f"({', '.join(t.order_by)})"
    tail = f" SETTINGS {settings}" if settings else ""
    table = f"{database}.{name}" if name else t.at(database)
    return f"CREATE TABLE IF NOT EXISTS {table} (\n    {cols}\n) ENGINE = {t.engine} ORDER BY {order}{tail}"


def schema_migrations_ddl(database: str = DATABASE) -> str:
    """The table that records applied migrations (it exists before any migration runs)."""
    return create_table_ddl(SCHEMA_MIGRATIONS, database)


VERSION_SHIFT = 20  # version = as_of_ms << 20 | per-customer seq


def row_version(as_of_ms: int, seq: int) -> int:
    """Deterministic ReplacingMergeTree version (invariant 5): event time, then per-customer sequence.

    Never the wall clock at write time, so a replay writes the same versions.

    >>> row_version(1_000, 7) < row_version(1_000, 8) < row_version(1_001, 0)
    True
    """
    return (as_of_ms << VERSION_SHIFT) | (seq & ((1 << VERSION_SHIFT) - 1))
