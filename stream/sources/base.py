"""What every source emits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stream.errors import StreamError

RawRecord = tuple[str, Any]  # (source position, payload: text, bytes or a row dict)


class SourceError(StreamError, ValueError):
    """An input cannot be read at all (missing file, unknown format, lost Kafka offsets)."""


@dataclass
class SourceBatch:
    """Raw records in arrival order, and the clock tick they bring (ms), if any.

    Replay sources leave ``tick_ms`` None: event time drives the clock. A live
    source sets it to the wall clock, so expiry happens without new events.
    """

    records: list[RawRecord]
    tick_ms: int | None = None
    part: str = ""  # the source partition (file or topic partition)
    n_parts: int = 1  # how many partitions the source has
    final: bool = False  # the last batch of its partition
    idle: bool = False  # read to its end and quiet for a while (see stream.clock.ShardClock.advance)
    # A columnar source (Parquet) sends an Arrow record batch instead of records;
    # its rows are `{part}:row{first_row + i}`.
    columns: Any = None
    first_row: int = 1
    # the partition's position among its source's, by which ``stream.placement`` names its state (None: by ``part``)
    index: int | None = None

    def __len__(self) -> int:
        return len(self.records) if self.columns is None else self.columns.num_rows
