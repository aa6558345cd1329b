"""The columnar fast path: validate an Arrow record batch (Parquet) without a model per row.

Most rows of a columnar export are ordinary: integer or plain-text ids, an
Arrow timestamp, finite numbers in range. For those, the checks of the event
contract (``schemas.events.Event``) reduce to a few vector operations, and the
``EventRecord`` can be built straight from the columns. Every other row is
left to the row path (``EventParser.parse_one``), which decides it and gives
the reason if it is rejected.

The rule this module keeps: a row it accepts yields exactly the record the row
path would give; when in doubt it accepts nothing. Text with anything but a
plain character at either end, float ids, ISO strings and nanosecond or float
epochs all go to the row path. ``tests/stream/test_columns.py`` checks the rule
on generated batches.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.events import (
    MAX_EVENT_ID_LENGTH,
    MAX_ID_LENGTH,
    MAX_QUANTITY,
    MAX_TIMESTAMP_MS,
    MAX_VALUE,
    MIN_TIMESTAMP_MS,
    PLAIN_CHARACTERS,
    TYPE_NAMES,
    EventRecord,
    content_id_of,
)
from schemas.mapping import ColumnMapping

_PER_MS = {"s": (1000, 1), "ms": (1, 1), "us": (1, 1000)}  # (multiply, floor-divide) to epoch ms
# Text whose first and last characters are in this set needs no whitespace stripping.
_PLAIN = f"[{re.escape(PLAIN_CHARACTERS)}]"
_PLAIN_TEXT = rf"(?s)^{_PLAIN}(?:.*{_PLAIN})?$"

Mask = np.ndarray  # bool, one per row


def _column(batch: pa.RecordBatch, name: str | None) -> pa.Array | None:
    if name is None or name not in batch.schema.names:
        return None
    col = batch.column(name)
    return col.dictionary_decode() if pa.types.is_dictionary(col.type) else col


def _mask(arr: pa.Array) -> Mask:
    """A boolean Arrow array as numpy, null as False."""
    return np.asarray(arr.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _text(col: pa.Array, max_len: int) -> tuple[pa.Array, Mask]:
    """Ids as text and where they are certainly valid: integers, or plain text of 1..max_len characters."""
    if pa.types.is_integer(col.type):
        text = pc.cast(col, pa.string())
        ok = _mask(col.is_valid())
    elif _is_text(col.type):
        text = col.cast(pa.string())
        ok = _mask(pc.match_substring_regex(col, _PLAIN_TEXT)) & _mask(pc.less_equal(pc.utf8_length(col), max_len))
    else:
        return pa.nulls(len(col), pa.string()), np.zeros(len(col), dtype=bool)
    return text, ok


def _epoch_ms(col: pa.Array, unit: str) -> tuple[np.ndarray, Mask]:
    """Event times as epoch ms and where they are certainly valid (in range, exact)."""
    n = len(col)
    if pa.types.is_timestamp(col.type):
        unit = col.type.unit  # a datetime carries its own unit, whatever the mapping says; the zone keeps the instant
        col = col.view(pa.int64())
    elif pa.types.is_integer(col.type):
        unit = "ms" if unit == "iso" else unit  # the contract reads bare numbers as epoch ms
    else:
        return np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
    if unit not in _PER_MS:
        return np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
    mul, div = _PER_MS[unit]
    raw = col.cast(pa.int64(), safe=False).fill_null(0).to_numpy()  # uint64 beyond int64 wraps negative: rejected
    ok = _mask(col.is_valid()) & (raw >= MIN_TIMESTAMP_MS * div // mul) & (raw < MAX_TIMESTAMP_MS * div // mul)
    ms = np.where(ok, raw, 0) * mul // div
    return ms, ok


def _number(col: pa.Array | None, default: float, lo: float, hi: float, n: int) -> tuple[np.ndarray, Mask]:
    """A finite number within [lo, hi] per row, the default where the column is missing or null."""
    if col is None:
        return np.full(n, default), np.ones(n, dtype=bool)
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
        return np.full(n, default), np.zeros(n, dtype=bool)
    x = col.cast(pa.float64(), safe=False).fill_null(default).to_numpy()  # ints in bounds are exact floats
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(x) & (x >= lo) & (x <= hi)
    return x, ok


def row_dicts(batch: pa.RecordBatch) -> list[dict[str, Any]]:
    """Rows as dicts (the raw payload of the row path and of dead letters).

    A value Python cannot hold (a timestamp beyond year 9999) becomes text
    naming it, which validation then rejects with a reason.
    """
    try:
        return batch.to_pylist()
    except (OverflowError, ValueError, pa.ArrowException):
        return [_row_dict(batch, i) for i in range(batch.num_rows)]


def _row_dict(batch: pa.RecordBatch, i: int) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for name, col in zip(batch.schema.names, batch.columns, strict=True):
        try:
            row[name] = col[i].as_py()
        except (OverflowError, ValueError, pa.ArrowException):
            raw = col.view(pa.int64())[i].as_py() if pa.types.is_temporal(col.type) else "?"
            row[name] = f"unreadable {col.type}: {raw}"
    return row


@lru_cache(maxsize=16)
def _value_set(type_names: tuple[str, ...]) -> pa.Array:
    """The vocabulary as an Arrow array (``pc.index_in`` gives the type index), built once per vocabulary."""
    return pa.array(list(type_names), pa.string())


def fast_records(
    batch: pa.RecordBatch, mapping: ColumnMapping, sources: list[str], type_names: tuple[str, ...] = TYPE_NAMES
) -> list[EventRecord | None]:
    """The record of each row the vector checks accept; None where the row path must decide.

    ``type_names`` is the vocabulary the row path validates against (``EventParser.types.names``).
    """
    n = batch.num_rows
    none: list[EventRecord | None] = [None] * n
    user_col = _column(batch, mapping.user_id)
    item_col = _column(batch, mapping.item_id)
    ts_col = _column(batch, mapping.timestamp)
    if user_col is None or item_col is None or ts_col is None:
        return none
    user_text, ok = _text(user_col, MAX_ID_LENGTH)
    item_text, ok_item = _text(item_col, MAX_ID_LENGTH)
    users, items = user_text.to_pylist(), item_text.to_pylist()
    ts, ok_ts = _epoch_ms(ts_col, mapping.timestamp_unit)
    ok &= ok_item & ok_ts

    if mapping.type_value is not None:
        if mapping.type_value not in type_names:
            return none
        type_index = np.full(n, type_names.index(mapping.type_value))
    else:
        type_col = _column(batch, mapping.type)
        if type_col is None or not _is_text(type_col.type):
            return none
        found = pc.index_in(type_col, value_set=_value_set(type_names))
        ok &= _mask(found.is_valid())
        renamed = [*mapping.type_values, *mapping.drop_types]
        if renamed:  # values the mapping renames or drops take the row path, which applies the mapping
            ok &= ~_mask(pc.is_in(type_col, value_set=pa.array(renamed, pa.string())))
        type_index = found.fill_null(0).to_numpy()

    quantity, ok_q = _number(_column(batch, mapping.quantity), 1.0, 0.0, MAX_QUANTITY, n)
    value, ok_v = _number(_column(batch, mapping.value), 0.0, -MAX_VALUE, MAX_VALUE, n)
    ok &= ok_q & ok_v
    cents = np.rint(np.where(ok, value, 0.0) * 100).astype(np.int64)

    event_ids = _event_ids(batch, mapping, n)
    if event_ids is None:  # no id column at all: every event gets its content id
        event_ids = [
            content_id_of(u, i, type_names[t], s, q, v) if good else None
            for u, i, t, s, q, v, good in zip(
                users,
                items,
                type_index.tolist(),
                ts.tolist(),
                quantity.tolist(),
                value.tolist(),
                ok.tolist(),
                strict=True,
            )
        ]
    rows = zip(
        ok.tolist(),
        users,
        items,
        type_index.tolist(),
        ts.tolist(),
        event_ids,
        quantity.tolist(),
        cents.tolist(),
        sources,
        strict=True,
    )
    return [
        EventRecord(u, i, t, s, e, q, c, src) if good and e is not None else None
        for good, u, i, t, s, e, q, c, src in rows
    ]


def _event_ids(batch: pa.RecordBatch, mapping: ColumnMapping, n: int) -> list[str | None] | None:
    """Event ids where certainly valid (None per row otherwise); None when the mapping has no id column."""
    names = mapping.event_id if isinstance(mapping.event_id, tuple) else (mapping.event_id,)
    if not [c for c in names if c is not None]:
        return None
    cols = [_column(batch, c) for c in names]
    if all(c is None for c in cols) and not isinstance(mapping.event_id, tuple):
        return None  # the named column is absent: like a null id, the content id applies
    if any(c is None for c in cols):
        return [None] * n  # part of a composite id is missing: the row path decides
    parts = [_text(c, MAX_EVENT_ID_LENGTH) for c in cols]
    if len(parts) == 1:
        ids, ok = parts[0]
    else:
        ids = pc.binary_join_element_wise(*[t for t, _ in parts], ":")
        ok = np.logical_and.reduce([m for _, m in parts])
        ok &= _mask(pc.less_equal(pc.utf8_length(ids), MAX_EVENT_ID_LENGTH))
    return [e if good else None for e, good in zip(ids.to_pylist(), ok.tolist(), strict=True)]
