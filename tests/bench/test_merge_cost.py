"""bench/merge_cost.py measures the table the stream writes: score_history's columns, engine and key, and its rows."""

from __future__ import annotations

from bench.merge_cost import blocks, ddl
from schemas.tables import SCORE_HISTORY, WIDE_MERGES


def test_the_benchmark_table_is_score_history_with_only_the_merge_setting_changed():
    plain, wide = ddl("a", ""), ddl("b", WIDE_MERGES)
    for c in SCORE_HISTORY.columns:
        assert f"{c.name} {c.type}" in plain
    assert f"ENGINE = {SCORE_HISTORY.engine} ORDER BY ({', '.join(SCORE_HISTORY.order_by)})" in plain
    assert "written_at DateTime64(3, 'UTC') DEFAULT now64(3)" in plain  # filled in by ClickHouse, as in the store
    assert "SETTINGS" not in plain and "bench.a (" in plain
    assert wide.replace("bench.b", "bench.a") == f"{plain} SETTINGS {WIDE_MERGES}"


def test_each_block_holds_the_inserted_columns_of_equal_length_and_the_same_rows_each_time():
    first, again = list(blocks(3, 50)), list(blocks(3, 50))
    assert first == again  # seeded: both selectors get the same rows
    for cols in first:
        assert len(cols) == len(SCORE_HISTORY.inserted) and {len(c) for c in cols} == {50}
    assert len({b[4][0] for b in first}) == 3  # each flush its own as_of
