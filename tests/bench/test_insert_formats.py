"""bench/insert_formats.py compares two ways of writing the same score rows: the Arrow table must hold those rows."""

from __future__ import annotations

import random

import pyarrow as pa

from bench.insert_formats import NAMES, as_arrow, score_columns
from schemas.tables import SCORES


def test_the_arrow_table_holds_the_native_columns_rows_with_the_declared_types():
    columns = score_columns(200, random.Random(3))
    assert tuple(columns) == NAMES == tuple(SCORES.inserted)  # every column the sink writes, in its order
    table = as_arrow(columns)
    assert table.column_names == list(NAMES)
    for name in ("user_id", "group_id", "score", "model_version", "version"):
        assert table[name].to_pylist() == columns[name], name
    assert table["as_of"].cast(pa.int64()).to_pylist() == columns["as_of"]  # epoch ms, as DateTime64(3) takes
    assert pa.types.is_dictionary(table["group_id"].type)  # LowCardinality(String)
    assert table["model_version"].type == pa.uint32() and table["version"].type == pa.uint64()
    assert len(set(columns["group_id"])) == 25 and len(set(columns["user_id"])) > 150
