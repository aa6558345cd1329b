"""Replay sources: CSV, JSONL and Parquet files, read in batches.

Each file is one Bytewax partition; its resume state is the number of records
already emitted, so a resumed run continues where the snapshot left off.
Records leave in ``SourceBatch`` items as ``(source position, payload)`` where the payload is the raw
text line (JSONL) or the row as a dict (CSV, Parquet): parsing and validation
happen downstream, so a bad row becomes a dead letter instead of an error here.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterator
from pathlib import Path

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from stream.sources.base import RawRecord, SourceBatch, SourceError

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


def file_format(path: Path) -> str:
    """Format of an input file from its extension."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        msg = f"{path}: unknown input format {path.suffix!r}; use one of {sorted(FORMATS)}"
        raise SourceError(msg)
    return fmt


def read_records(path: Path, skip: int = 0) -> Iterator[RawRecord]:
    """Yield records of one file, skipping the first ``skip``."""
    fmt = file_format(path)
    name = str(path)
    if fmt == "jsonl":
        f = path.open("r", encoding="utf-8", errors="replace", newline="")
        with f:
            lines = (line for line in f if line.strip())
            for i, line in enumerate(itertools.islice(lines, skip, None), start=skip + 1):
                yield f"{name}:{i}", line.rstrip("\r\n")
    elif fmt == "csv":
        with path.open("r", encoding="utf-8", errors="replace", newline="") as f:
            reader = csv.DictReader(f)
            for i, row in enumerate(itertools.islice(reader, skip, None), start=skip + 1):
                yield f"{name}:{i + 1}", row  # +1: line 1 is the header
    else:
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        n = 0
        for batch in pf.iter_batches(batch_size=65_536):
            if n + batch.num_rows <= skip:
                n += batch.num_rows
                continue
            for row in batch.to_pylist():
                n += 1
                if n > skip:
                    yield f"{name}:row{n}", row


class _FilePartition(StatefulSourcePartition[SourceBatch, int]):
    def __init__(self, path: Path, batch_size: int, resume: int | None, n_parts: int):
        self._emitted = resume or 0
        self._records = read_records(path, self._emitted)
        self._batch_size = batch_size
        self._part = str(path)
        self._n_parts = n_parts
        self._done = False

    def next_batch(self) -> list[SourceBatch]:
        if self._done:
            raise StopIteration
        batch = list(itertools.islice(self._records, self._batch_size))
        self._emitted += len(batch)
        self._done = len(batch) < self._batch_size
        return [SourceBatch(batch, None, self._part, self._n_parts, final=self._done)]

    def snapshot(self) -> int:
        return self._emitted


class FileReplaySource(FixedPartitionedSource[SourceBatch, int]):
    """Replays files in their order; each item is a batch of raw records."""

    def __init__(self, paths: list[Path], batch_size: int = 20_000):
        for p in paths:
            if not p.is_file():
                msg = f"input file {p} does not exist"
                raise SourceError(msg)
            file_format(p)
        self.paths = paths
        self.batch_size = batch_size

    def list_parts(self) -> list[str]:
        return [str(p) for p in self.paths]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _FilePartition:
        return _FilePartition(Path(for_part), self.batch_size, resume_state, len(self.paths))
