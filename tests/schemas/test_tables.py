"""schemas.tables owns each table's columns: the sink writes exactly those, and bulk rescore takes them from it."""

from __future__ import annotations

from datetime import UTC, datetime

from offline_train.rescore import SCORE_COLUMNS
from schemas.events import TYPE_NAMES, DeadLetter, EventRecord, FeatureRow, ItemActivityRow
from schemas.tables import (
    COLUMNS,
    MIGRATIONS,
    SCHEMA_VERSION,
    SCORE_HISTORY,
    SCORE_TABLES,
    SCORES,
    row_version,
)
from stream.apply import ItemColumns
from stream.rows import FeatureColumns
from stream.shard import ScoreColumns, ShardOutput
from stream.sinks.base import dead_letter_rows, table_rows, trending_rows
from stream.trending import TrendRow


def test_the_sink_writes_exactly_the_columns_of_each_table():
    rec = EventRecord("u1", "i1", 2, 1_500_000_000_000, "e1", 1.0, 250, "f:1")
    out = ShardOutput(
        shard=0,
        applied=[rec],
        dead_letters=[DeadLetter("bad JSON", "{", "f:2")],
        features=FeatureColumns.from_rows([FeatureRow("u1", rec.ts_ms, {"grp=all|stat=history_days": 0.0}, 7)]),
        scores=ScoreColumns(rec.ts_ms, ["u1"], ["coffee"], [0.5], [1], [7]),
        item_activity=ItemColumns.from_rows([ItemActivityRow(rec.ts_ms, "i1", "purchase", 0, 1, 1.0, 2.5)]),
    )
    trend = [TrendRow(rec.ts_ms, "1h", "item", "i1", "purchase", 1, 0.5, 0.3, 1, 0)]
    now = datetime.now(tz=UTC)
    rows = table_rows([out], TYPE_NAMES) | dead_letter_rows(out.dead_letters, now) | trending_rows(trend)
    # written by commands, not the stream: models (`train`, `models`), campaign_members (`segment --campaign`),
    # drift_events and live_calibration (`monitor`)
    assert rows.keys() == COLUMNS.keys() - {"models", "campaign_members", "drift_events", "live_calibration"}
    for table, columns in rows.items():
        assert sorted(columns) == sorted(COLUMNS[table]), table
        assert {len(v) for v in columns.values()} == {1}, table


def test_records_name_their_fields_as_their_tables_name_the_columns():
    assert (*DeadLetter._fields, "received_at") == COLUMNS["dead_letters"]
    assert FeatureRow._fields == COLUMNS["customer_features"]
    assert ItemActivityRow._fields == COLUMNS["item_activity"]
    assert TrendRow._fields == COLUMNS["trending"]


def test_score_tables_share_columns_and_rescore_writes_them():
    assert COLUMNS["scores"] == ("user_id", "group_id", "score", "model_version", "as_of", "version")
    assert SCORES.columns == SCORE_HISTORY.columns and SCORE_TABLES == (SCORES, SCORE_HISTORY)
    assert tuple(SCORE_COLUMNS) == COLUMNS["scores"]


def test_migrations_are_numbered_from_one_and_every_statement_can_run_twice():
    # Increasing from 1 (helpers append numbers assigned in parallel, so a branch may skip some).
    versions = [m.version for m in MIGRATIONS]
    assert versions[0] == 1 and versions == sorted(set(versions)) and versions[-1] == SCHEMA_VERSION
    for m in MIGRATIONS:
        for sql in m.statements:
            assert "IF NOT EXISTS" in sql or " MODIFY SETTING " in sql, (m.version, sql[:60])
            assert sql.format(db="x").count("x.") == 1, sql[:60]  # names the database once, by placeholder


def test_server_filled_columns_are_not_written():
    assert "written_at" in SCORES.names and "written_at" not in SCORES.inserted


def test_versions_order_by_event_time_then_sequence_whatever_the_sequence_size():
    assert row_version(1_000, 7) < row_version(1_000, 8) < row_version(1_001, 0)
    assert row_version(1_000, (1 << 20) + 3) == row_version(1_000, 3) < row_version(1_001, 0)
