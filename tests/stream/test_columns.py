"""The columnar fast path (stream/columns.py) decides every row exactly as the row path does."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.mapping import ColumnMapping
from stream.columns import fast_records, row_dicts
from stream.parse import EventParser
from stream.sources import read_batches, read_records
from stream.sources.base import SourceBatch

MIN_MS = 946_684_800_000  # 2000-01-01
MAX_MS = 4_102_444_800_000  # 2100-01-01
T0_MS = 1_488_362_400_000  # 2017-03-01T10:00:00Z

CJ_LIKE = ColumnMapping(
    user_id="household_id",
    item_id="product_id",
    type=None,
    type_value="purchase",
    timestamp="ts",
    event_id=("basket_id", "product_id"),
    quantity="quantity",
    value="sales_value",
)
IDENTITY = ColumnMapping(user_id="household_id", item_id="product_id", timestamp="ts", quantity="quantity",
                         value="sales_value", event_id="event_id", type="type")  # fmt: skip

texts = st.one_of(
    st.sampled_from(["u1", "42", "a-b.c", "", " u1", "u1 ", "\tx", "x\x1c", "é", "x" * 128, "x" * 129, "ab cd"]),
    st.text(max_size=6),
)
ints = st.one_of(st.integers(-5, 10**6), st.sampled_from([0, -(2**63), 2**63 - 1]))


def id_column(kind: str, n: int):
    if kind == "int":
        return st.lists(st.one_of(st.none(), ints), min_size=n, max_size=n).map(lambda v: pa.array(v, pa.int64()))
    if kind == "text":
        return st.lists(st.one_of(st.none(), texts), min_size=n, max_size=n).map(lambda v: pa.array(v, pa.string()))
    if kind == "large_text":
        return st.lists(texts, min_size=n, max_size=n).map(lambda v: pa.array(v, pa.large_string()))
    floats = st.one_of(st.none(), st.floats(allow_nan=True), st.integers(0, 100).map(float))
    return st.lists(floats, min_size=n, max_size=n).map(lambda v: pa.array(v, pa.float64()))


epochs_ms = st.one_of(
    st.integers(MIN_MS - 5, MIN_MS + 5),
    st.integers(MAX_MS - 5, MAX_MS + 5),
    st.integers(T0_MS - 10**10, T0_MS + 10**10),
    st.sampled_from([0, -1, 10**15, -(10**15)]),
)


def ts_column(kind: str, n: int):
    values = st.lists(st.one_of(st.none(), epochs_ms), min_size=n, max_size=n)
    if kind == "int_ms":
        return values.map(lambda v: pa.array(v, pa.int64()))
    if kind == "int_s":
        return values.map(lambda v: pa.array([None if x is None else x // 1000 for x in v], pa.int64()))
    if kind == "int_us":
        return values.map(lambda v: pa.array([None if x is None else x * 1000 + 7 for x in v], pa.int64()))
    if kind == "iso":
        return st.lists(st.sampled_from(["2017-03-01T10:00:00Z", "2017-03-01 05:00:00-05:00", "nope", None]),
                        min_size=n, max_size=n).map(lambda v: pa.array(v, pa.string()))  # fmt: skip
    unit, _, tz = kind.partition("/")
    scale = {"s": (1, 1000), "ms": (1, 1), "us": (1000, 1), "ns": (10**6, 1)}[unit]

    def build(v):
        raw = [None if x is None else x * scale[0] // scale[1] + (123 if unit == "ns" else 0) for x in v]
        raw = [x if x is None or abs(x) < 2**63 else None for x in raw]
        return pa.array(raw, pa.int64()).cast(pa.timestamp(unit, tz or None))

    return values.map(build)


def number_column(kind: str, n: int):
    if kind == "int":
        return st.lists(st.one_of(st.none(), st.integers(-3, 2 * 10**9)), min_size=n, max_size=n).map(
            lambda v: pa.array(v, pa.int64())
        )
    if kind == "text":
        return st.lists(st.sampled_from(["1", "x", None]), min_size=n, max_size=n).map(
            lambda v: pa.array(v, pa.string())
        )
    floats = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.floats(-2e9, 2e9))
    return st.lists(floats, min_size=n, max_size=n).map(lambda v: pa.array(v, pa.float64()))


TS_KINDS = ["ms", "us", "s", "ns", "ms/UTC", "ms/Asia/Tokyo", "int_ms", "int_s", "int_us", "iso"]


@st.composite
def batches(draw):
    n = draw(st.integers(1, 12))
    cols = {
        "household_id": draw(id_column(draw(st.sampled_from(["int", "int", "text", "large_text", "float"])), n)),
        "product_id": draw(id_column(draw(st.sampled_from(["int", "int", "text"])), n)),
        "basket_id": draw(id_column(draw(st.sampled_from(["int", "text"])), n)),
        "ts": draw(ts_column(draw(st.sampled_from(TS_KINDS)), n)),
        "quantity": draw(number_column(draw(st.sampled_from(["int", "float", "text"])), n)),
        "sales_value": draw(number_column(draw(st.sampled_from(["float", "int"])), n)),
    }  # fmt: skip
    if draw(st.booleans()):
        cols["type"] = pa.array(draw(st.lists(st.sampled_from(["purchase", "view", "cart", "Purchase", " view", None]),
                                             min_size=n, max_size=n)), pa.string())  # fmt: skip
    if draw(st.booleans()):
        cols["event_id"] = draw(id_column(draw(st.sampled_from(["int", "text"])), n))
    drop = draw(st.sampled_from([None, "quantity", "sales_value", "basket_id"]))
    if drop:
        del cols[drop]
    mapping = draw(st.sampled_from([CJ_LIKE, IDENTITY, IDENTITY.model_copy(update={"event_id": None})]))
    ts_kind = cols["ts"].type
    if pa.types.is_integer(ts_kind) and draw(st.booleans()):
        mapping = mapping.model_copy(update={"timestamp_unit": draw(st.sampled_from(["s", "ms", "us", "ns"]))})
    return pa.RecordBatch.from_pydict(cols), mapping


def both_paths(batch: pa.RecordBatch, mapping: ColumnMapping):
    parser = EventParser(mapping, wall_clock=lambda: T0_MS / 1000 + 3600)
    columnar = parser.parse_batch(SourceBatch([], part="f.parquet", columns=batch, first_row=1))
    rows = SourceBatch([(f"f.parquet:row{i + 1}", r) for i, r in enumerate(row_dicts(batch))], part="f.parquet")
    by_row = parser.parse_batch(rows)
    return columnar, by_row


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_columnar_path_decides_every_row_as_the_row_path(case):
    batch, mapping = case
    columnar, by_row = both_paths(batch, mapping)
    assert columnar.records == by_row.records
    assert columnar.dead == by_row.dead
    assert columnar.tick_ms == by_row.tick_ms
    assert columnar.n_in == by_row.n_in == batch.num_rows


def cj_batch(n: int) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {
            "household_id": pa.array([1000 + i % 7 for i in range(n)], pa.int64()),
            "product_id": pa.array([900_000 + i for i in range(n)], pa.int64()),
            "basket_id": pa.array([31_000_000_000 + i // 3 for i in range(n)], pa.int64()),
            "ts": pa.array([T0_MS - 60_000 * i for i in range(n)], pa.int64()).cast(pa.timestamp("ms")),
            "quantity": pa.array([1 + i % 3 for i in range(n)], pa.int64()),
            "sales_value": pa.array([0.01 * i for i in range(n)], pa.float64()),
        }
    )


def test_ordinary_rows_take_the_fast_path():
    batch = cj_batch(500)
    fast = fast_records(batch, CJ_LIKE, [f"f:row{i}" for i in range(500)])
    assert all(r is not None for r in fast)
    columnar, by_row = both_paths(batch, CJ_LIKE)
    assert len(columnar.records) == 500 and columnar.records == by_row.records


def test_rows_beyond_python_datetimes_become_dead_letters():
    batch = pa.RecordBatch.from_pydict(
        {
            "household_id": pa.array([1, 2], pa.int64()),
            "product_id": pa.array([5, 6], pa.int64()),
            "basket_id": pa.array([7, 8], pa.int64()),
            "ts": pa.array([T0_MS, 10**16], pa.int64()).cast(pa.timestamp("ms")),
        }
    )
    columnar, by_row = both_paths(batch, CJ_LIKE)
    assert [r.user_id for r in columnar.records] == ["1"]
    ((reason, payload, source),) = columnar.dead
    assert "timestamp" in reason and source == "f.parquet:row2" and "10000000000000000" in payload
    assert columnar.dead == by_row.dead


@pytest.mark.parametrize("batch_size", [1, 7, 64, 1000])
def test_parquet_batches_resume_at_any_row(tmp_path, batch_size):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_batches([cj_batch(100)]), path, row_group_size=30)
    every = list(read_records(path))
    for skip in (0, 1, 29, 30, 31, 99, 100):
        got = list(read_batches(path, batch_size, skip))
        assert got[-1].final and not any(b.final for b in got[:-1])
        rows = [
            (f"{path}:row{b.first_row + i}", r)
            for b in got
            if b.columns is not None
            for i, r in enumerate(row_dicts(b.columns))
        ]
        assert rows == every[skip:]
        for b in got:
            if b.columns is not None:  # slices of record batches (resume) parse alike on both paths
                columnar, by_row = both_paths(b.columns, CJ_LIKE)
                assert columnar.records == by_row.records and len(columnar.records) == len(b)
