"""Replay sources: CSV, JSONL and Parquet files, read in batches.

Each file is one Bytewax partition; its resume state is the number of records
already emitted, so a resumed run continues where the snapshot left off.
Records leave in ``SourceBatch`` items as ``(source position, payload)`` where the payload is the raw
text line (JSONL) or the row as a dict (CSV); Parquet leaves as Arrow record
batches. Parsing and validation happen downstream, so a bad row becomes a
dead letter instead of an error here.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from schemas.mapping import ColumnMapping
from stream.columns import row_dicts
from stream.sources.base import RawRecord, SourceBatch, SourceError

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


def file_format(path: Path) -> str:
    """Format of an input file from its extension."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        msg = f"{path}: unknown input format {path.suffix!r}; use one of {sorted(FORMATS)}"
        raise SourceError(msg)
    return fmt


def _require_columns(path: Path, names: list[str] | None, mapping: ColumnMapping | None) -> None:
    """A file whose columns lack what the mapping reads is an error, not a dead letter per row."""
    if mapping is None or names is None:
        return
    missing = [c for c in mapping.required_columns if c not in names]
    if missing:
        hint = "" if mapping.csv_columns else " (a CSV file without a header line: name its columns in csv_columns)"
        msg = f"{path}: the mapping reads columns {missing}, which the file does not have; it has {names[:12]}{hint}"
        raise SourceError(msg)


def read_records(path: Path, skip: int = 0, mapping: ColumnMapping | None = None) -> Iterator[RawRecord]:
    """Yield records of one file, skipping the first ``skip``.

    With a ``mapping``, a CSV or Parquet file must have the columns it reads
    (``SourceError`` otherwise), and a CSV file without a header line takes
    its column names from ``mapping.csv_columns``.
    """
    fmt = file_format(path)
    name = str(path)
    if fmt == "jsonl":
        f = path.open("r", encoding="utf-8", errors="replace", newline="")
        with f:
            lines = (line for line in f if line.strip())
            for i, line in enumerate(itertools.islice(lines, skip, None), start=skip + 1):
                yield f"{name}:{i}", line.rstrip("\r\n")
    elif fmt == "csv":
        columns = mapping.csv_columns if mapping is not None else None
        with path.open("r", encoding="utf-8", errors="replace", newline="") as f:
            reader = csv.DictReader(f, fieldnames=list(columns) if columns else None)
            _require_columns(path, list(reader.fieldnames or []), mapping)
            header = 0 if columns else 1  # line 1 is the header, unless the mapping names the columns
            for i, row in enumerate(itertools.islice(reader, skip, None), start=skip + 1):
                yield f"{name}:{i + header}", row
    else:
        _require_columns(path, _parquet_columns(path), mapping)
        for first, batch in _parquet_batches(path, 65_536, skip):
            for n, row in enumerate(row_dicts(batch), start=first):
                yield f"{name}:row{n}", row


def _parquet_columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    return list(pq.ParquetFile(path).schema_arrow.names)


def _parquet_batches(path: Path, batch_size: int, skip: int) -> Iterator[tuple[int, Any]]:
    """Arrow record batches of a Parquet file after its first ``skip`` rows, with their first row number."""
    import pyarrow.parquet as pq

    n = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size):
        if n + batch.num_rows > skip:
            cut = max(0, skip - n)
            yield n + cut + 1, batch.slice(cut)
        n += batch.num_rows


def read_batches(
    path: Path,
    batch_size: int,
    skip: int = 0,
    n_parts: int = 1,
    mapping: ColumnMapping | None = None,
    index: int = 0,
) -> Iterator[SourceBatch]:
    """Batches of one file after its first ``skip`` records; the last one is marked final.

    Parquet leaves as Arrow record batches (the parser's columnar fast path),
    CSV and JSONL as raw records.
    """
    part = str(path)
    batches: Iterator[SourceBatch]
    if file_format(path) == "parquet":
        _require_columns(path, _parquet_columns(path), mapping)
        batches = (
            SourceBatch([], None, part, n_parts, columns=b, first_row=first, index=index)
            for first, b in _parquet_batches(path, batch_size, skip)
        )
    else:
        records = read_records(path, skip, mapping)
        chunks = iter(lambda: list(itertools.islice(records, batch_size)), [])
        batches = (SourceBatch(c, None, part, n_parts, index=index) for c in chunks)
    last = SourceBatch([], None, part, n_parts, index=index)
    for batch in batches:
        if len(last):
            yield last
        last = batch
    last.final = True
    yield last


class _FilePartition(StatefulSourcePartition[SourceBatch, int]):
    def __init__(
        self, path: Path, batch_size: int, resume: int | None, n_parts: int, mapping: ColumnMapping | None, index: int
    ):
        self._emitted = resume or 0
        self._batches = read_batches(path, batch_size, self._emitted, n_parts, mapping, index)

    def next_batch(self) -> list[SourceBatch]:
        batch = next(self._batches)  # StopIteration after the final batch ends the partition
        self._emitted += len(batch)
        return [batch]

    def snapshot(self) -> int:
        return self._emitted


class FileReplaySource(FixedPartitionedSource[SourceBatch, int]):
    """Replays files in their order; each item is a batch of raw records."""

    def __init__(self, paths: list[Path], batch_size: int = 20_000, mapping: ColumnMapping | None = None):
        for p in paths:
            if not p.is_file():
                msg = f"input file {p} does not exist"
                raise SourceError(msg)
            file_format(p)
        self.paths = paths
        self.batch_size = batch_size
        self.mapping = mapping  # header-less CSV columns, and the columns every file must have

    def list_parts(self) -> list[str]:
        return [str(p) for p in self.paths]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _FilePartition:
        index = [str(p) for p in self.paths].index(for_part)
        return _FilePartition(Path(for_part), self.batch_size, resume_state, len(self.paths), self.mapping, index)
