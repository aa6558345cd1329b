"""Sources: where raw records come from (files for replay, Kafka when live).

Every source emits ``SourceBatch`` items: raw records plus, for live sources,
a wall-clock tick so windows expire even when no event arrives.
"""

from stream.sources.base import RawRecord, SourceBatch, SourceError
from stream.sources.files import FileReplaySource, file_format, read_batches, read_records

__all__ = ["FileReplaySource", "RawRecord", "SourceBatch", "SourceError", "file_format", "read_batches", "read_records"]
