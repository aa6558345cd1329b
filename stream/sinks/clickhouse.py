"""ClickHouse sink: embedded chDB (``chdb:///path``) or a server (``http://host:8123``).

The same clickhouse-connect client API serves both; only one process may
open a chDB path, so clients are cached per DSN within a process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import clickhouse_connect
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from clickhouse_connect.driver.exceptions import ClickHouseError

from schemas.events import DeadLetter
from schemas.tables import (
    DATABASE,
    MIGRATIONS,
    SCHEMA_MIGRATIONS,
    SCORE_HISTORY,
    Migration,
    schema_migrations_ddl,
    score_history_ttl,
)
from stream.errors import StreamError
from stream.shard import ShardOutput
from stream.sinks.base import RunStats, TableRows, TableWriter, dead_letter_rows, table_rows, trending_rows
from stream.trending import TrendRow

log = logging.getLogger(__name__)
_clients: dict[str, Any] = {}
_lock = threading.Lock()


class ClickHouseUnavailableError(StreamError):
    """ClickHouse cannot be opened or reached; the message says which and what to do."""


def redact_dsn(dsn: str) -> str:
    """The DSN without a password in it, for messages.

    >>> redact_dsn("http://default:s3cret@ch.example:8123/?secure=1")
    'http://default:***@ch.example:8123/?secure=1'
    >>> redact_dsn("chdb:///data/chdb")
    'chdb:///data/chdb'
    """
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def open_client(dsn: str, user: str | None = None, password: str | None = None) -> Any:
    """A clickhouse-connect client for a chDB path or a server URL (cached per DSN)."""
    with _lock:
        client = _clients.get(dsn)
        if client is None:
            embedded = dsn.startswith("chdb://")
            kwargs: dict[str, Any] = {"dsn": dsn}
            if user and not embedded:
                kwargs["username"] = user
            if password and not embedded:
                kwargs["password"] = password
            try:
                client = clickhouse_connect.get_client(**kwargs)
            except ClickHouseError as exc:
                if embedded:
                    msg = (
                        f"cannot open embedded ClickHouse at {dsn.removeprefix('chdb://')} (only one process may "
                        f"open a chDB path: is a stream, demo or segment using it?): {exc}"
                    )
                else:
                    msg = f"cannot reach ClickHouse at {redact_dsn(dsn)}: {_redacted(str(exc), dsn, password)}"
                raise ClickHouseUnavailableError(msg) from exc
            _clients[dsn] = client
        return client


def _redacted(text: str, dsn: str, password: str | None) -> str:
    """``text`` with every password it could quote replaced (a driver error may echo the URL)."""
    for secret in (urlsplit(dsn).password, password):
        if secret:
            text = text.replace(secret, "***")
    return text.replace(dsn, redact_dsn(dsn))


class SchemaTooNewError(StreamError):
    """The store was migrated by a newer propstream than this one."""


def schema_version(client: Any, database: str = DATABASE) -> int:
    """The last migration a store has had (0: none recorded)."""
    exists = client.query(
        "SELECT count() FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        parameters={"db": database, "t": SCHEMA_MIGRATIONS.name},
    ).result_rows[0][0]
    if not exists:
        return 0
    return int(client.query(f"SELECT max(version) FROM {SCHEMA_MIGRATIONS.at(database)}").result_rows[0][0])


def migrate(client: Any, database: str = DATABASE) -> list[Migration]:
    """Bring the store up to date: apply the migrations it has not had, in order; the ones applied.

    Idempotent, and safe when two processes migrate at once (every statement
    is IF NOT EXISTS). A store made by a newer propstream is refused rather
    than written with an older idea of its tables.
    """
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    client.command(schema_migrations_ddl(database))
    current = schema_version(client, database)
    newest = MIGRATIONS[-1].version
    if current > newest:
        msg = (
            f"database {database} has schema version {current}, this propstream knows up to {newest}: "
            "upgrade propstream to use this store"
        )
        raise SchemaTooNewError(msg)
    applied = []
    for m in MIGRATIONS:
        if m.version <= current:
            continue
        for sql in m.statements:
            client.command(sql.format(db=database))
        client.insert(
            SCHEMA_MIGRATIONS.at(database),
            [[m.version, m.description, datetime.now(tz=UTC)]],
            column_names=list(SCHEMA_MIGRATIONS.names),
        )
        applied.append(m)
    return applied


def apply_retention(client: Any, database: str, days: int | None) -> str | None:
    """Make ``score_history``'s TTL match the retention setting; returns what changed (None: nothing).

    ``ALTER TABLE ... MODIFY TTL`` when the setting is set and differs from the
    table's, ``REMOVE TTL`` when it is unset and the table has one.
    """
    want = score_history_ttl(days)
    table = SCORE_HISTORY.at(database)
    rows = client.query(
        "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        parameters={"db": database, "t": SCORE_HISTORY.name},
    ).result_rows
    engine = rows[0][0] if rows else ""
    has = " TTL " in f" {engine} "
    if want is not None and f"TTL {want}" not in engine:
        client.command(f"ALTER TABLE {table} MODIFY TTL {want}")
        return f"score_history keeps {days} days (TTL {want})"
    if want is None and has:
        client.command(f"ALTER TABLE {table} REMOVE TTL")
        return "score_history is kept forever (TTL removed)"
    return None


class ClickHouseWriter(TableWriter):
    """Column-oriented inserts into ``database``; serialised by a lock (chDB is one engine)."""

    def __init__(self, client: Any, database: str = DATABASE):
        self.client = client
        self.database = database
        self._lock = threading.Lock()

    def insert(self, table: str, columns: dict[str, list]) -> None:
        """Insert rows given as columns."""
        names = list(columns)
        with self._lock:
            self.client.insert(
                f"{self.database}.{table}",
                [columns[n] for n in names],
                column_names=names,
                column_oriented=True,
            )


class _Partition(StatelessSinkPartition[Any]):
    """Writes one batch of items as one insert per table, counts it, reports progress now and then."""

    def __init__(
        self,
        writer: TableWriter,
        rows: Callable[[list], TableRows],
        count: Callable[[list], None],
        stats: RunStats,
        report: Callable[[RunStats], None] | None,
        every: float,
    ):
        self.writer = writer
        self.rows = rows
        self.count = count
        self.stats = stats
        self.report = report
        self.every = every

    def write_batch(self, items: list) -> None:
        for table, columns in self.rows(items).items():
            self.writer.insert(table, columns)
        self.count(items)
        if self.report is not None and time.perf_counter() - self.stats.last_report >= self.every:
            self.stats.last_report = time.perf_counter()
            self.report(self.stats)


class ClickHouseSink(DynamicSink[ShardOutput]):
    """Writes every table of a ShardOutput batch; one insert per table per batch.

    ``dead_letter_sink()`` and ``trending_sink()`` are its companions for the
    dataflow's dead-letter and trending streams: the same writer and counters,
    the ``dead_letters`` and ``trending`` tables.
    """

    def __init__(
        self,
        writer: TableWriter,
        stats: RunStats | None = None,
        report: Callable[[RunStats], None] | None = None,
        report_every_s: float = 5.0,
        *,
        type_names: tuple[str, ...],
    ):
        self.writer = writer
        self.type_names = type_names  # the vocabulary's names: the events table stores a type by name
        self.stats = stats or RunStats()
        self.report = report
        self.every = report_every_s

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
        names = self.type_names
        rows = lambda outputs: table_rows(outputs, names)  # noqa: E731
        return _Partition(self.writer, rows, self.stats.add, self.stats, self.report, self.every)

    def dead_letter_sink(self) -> DynamicSink[DeadLetter]:
        """The sink of the dead-letter stream into the ``dead_letters`` table."""
        return _DeadLetterTableSink(self)

    def trending_sink(self) -> DynamicSink[TrendRow]:
        """The sink of the trending stream (ranked rows of closed windows) into the ``trending`` table."""
        return _TrendingTableSink(self)


class _DeadLetterTableSink(DynamicSink[DeadLetter]):
    def __init__(self, outputs: ClickHouseSink):
        self.outputs = outputs

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
        o = self.outputs
        rows = lambda letters: dead_letter_rows(letters, datetime.now(tz=UTC))  # noqa: E731
        return _Partition(o.writer, rows, o.stats.add_dead_letters, o.stats, None, o.every)


class _TrendingTableSink(DynamicSink[TrendRow]):
    def __init__(self, outputs: ClickHouseSink):
        self.outputs = outputs

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
        o = self.outputs
        return _Partition(o.writer, trending_rows, o.stats.add_trending, o.stats, None, o.every)
