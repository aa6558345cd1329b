"""Sinks: where the dataflow's outputs go (ClickHouse tables)."""

from stream.sinks.base import RunStats, TableRows, TableWriter, table_rows
from stream.sinks.clickhouse import ClickHouseSink, ClickHouseWriter, open_client

__all__ = [
    "ClickHouseSink",
    "ClickHouseWriter",
    "RunStats",
    "TableRows",
    "TableWriter",
    "open_client",
    "table_rows",
]
