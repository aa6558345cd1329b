"""ClickHouse sink: embedded chDB (``chdb:///path``) or a server (``http://host:8123``).

The same clickhouse-connect client API serves both; only one process may
open a chDB path, so clients are cached per DSN within a process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import clickhouse_connect
import pyarrow as pa
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from clickhouse_connect.driver.exceptions import ClickHouseError, Error, OperationalError

from schemas.events import DeadLetter
from schemas.tables import (
    CUSTOMER_FEATURES,
    DATABASE,
    EVENTS,
    ITEM_ACTIVITY,
    MIGRATIONS,
    SCHEMA_MIGRATIONS,
    SCORE_HISTORY,
    SCORES,
    TABLES,
    Migration,
    Table,
    schema_migrations_ddl,
    score_history_ttl,
)
from stream.errors import StreamError
from stream.rows import FeatureMaps
from stream.shard import ShardOutput
from stream.sinks.base import (
    ColumnValues,
    RunStats,
    TableRows,
    TableWriter,
    dead_letter_rows,
    table_rows,
    trending_rows,
)
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


# The embedded engine's memory worker reads the process's memory statistics every 100 ms by default:
# a quarter of an idle stream's CPU (bench/live.py --idle). Every 5 s is plenty for a process whose memory
# is mostly Python's; a server keeps its own configuration.
EMBEDDED_OPTIONS = {"memory_worker_period_ms": "5000"}


def open_client(dsn: str, user: str | None = None, password: str | None = None) -> Any:
    """A clickhouse-connect client for a chDB path or a server URL (cached per DSN)."""
    with _lock:
        client = _clients.get(dsn)
        if client is None:
            embedded = dsn.startswith("chdb://")
            kwargs: dict[str, Any] = {"dsn": dsn}
            if embedded:
                kwargs["chdb_options"] = EMBEDDED_OPTIONS
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


# ClickHouse error codes an insert can meet that go away by themselves: the server is busy, merging, short of
# memory or between replicas. Any other code (a missing table, a wrong type...) fails the insert at once.
TRANSIENT_CODES = {
    159: "TIMEOUT_EXCEEDED",
    202: "TOO_MANY_SIMULTANEOUS_QUERIES",
    209: "SOCKET_TIMEOUT",
    210: "NETWORK_ERROR",
    241: "MEMORY_LIMIT_EXCEEDED",
    242: "TABLE_IS_READ_ONLY",
    252: "TOO_MANY_PARTS",
    999: "KEEPER_EXCEPTION",
}


def transient(exc: BaseException) -> bool:
    """Whether a failed insert may succeed if tried again: a transient code, or no answer at all (the network).

    >>> transient(OperationalError("Error executing HTTP request")), transient(Error("x", code=252))
    (True, True)
    >>> transient(Error("Unknown table", code=60)), transient(ValueError("no Arrow type"))
    (False, False)
    """
    if isinstance(exc, Error) and exc.code in TRANSIENT_CODES:
        return True
    return isinstance(exc, OperationalError) and exc.code is None  # refused, reset, timed out: no server answer


class ClickHouseWriter(TableWriter):
    """Column-oriented inserts into ``database``; serialised by a lock (chDB is one engine).

    An insert that fails for a reason that goes away by itself (``transient``:
    a server that is restarting, unreachable or busy merging) is tried again,
    after 0.25 s, then twice as long each time up to 5 s, for
    ``retry_seconds`` (``stream.sink_retry_seconds``) before its error is
    raised as a ``ClickHouseUnavailableError``. Trying again is safe: every
    table the stream writes replaces rows by key (``ReplacingMergeTree``), so
    an insert that landed although its answer was lost reads once with FINAL.
    ``retries`` counts the tries again.
    """

    def __init__(self, client: Any, database: str = DATABASE, retry_seconds: float = 0.0):
        self.client = client
        self.database = database
        self.retry_seconds = retry_seconds
        self.retries = 0
        self._lock = threading.Lock()

    def insert(self, table: str, columns: dict[str, ColumnValues]) -> None:
        """Insert rows given as columns (``_insert``), trying again while the failure is ``transient``."""
        delay, started = 0.25, time.monotonic()
        while True:
            try:
                self._insert(table, columns)
                return
            except Exception as exc:
                spent = time.monotonic() - started
                if not transient(exc):
                    raise
                first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                if spent + delay > self.retry_seconds:
                    msg = (
                        f"ClickHouse did not take an insert into {table} for {spent:.1f} s "
                        f"(stream.sink_retry_seconds {self.retry_seconds:g}): {first_line}"
                    )
                    raise ClickHouseUnavailableError(msg) from exc
                log.warning("insert into %s failed, trying again in %.2f s: %s", table, delay, first_line)
                self.retries += 1
                time.sleep(delay)
                delay = min(2 * delay, 5.0)

    def _insert(self, table: str, columns: dict[str, ColumnValues]) -> None:
        """Insert rows given as columns; a table with a ``FeatureMaps`` column goes as Arrow (``arrow_table``).

        A table of ``schemas.tables`` is written with its declared column
        types: clickhouse-connect otherwise asks the store for them (a
        DESCRIBE) before every insert, ~1 ms of CPU each (BENCHMARKS.md 6k).
        """
        names = list(columns)
        declared = TABLES.get(table)  # migrations keep a store's columns as declared (test_schema)
        with self._lock:
            if any(isinstance(v, FeatureMaps) for v in columns.values()):
                self.client.insert_arrow(f"{self.database}.{table}", arrow_table(TABLES[table], columns))
                return
            self.client.insert(
                f"{self.database}.{table}",
                [columns[n] for n in names],
                column_names=names,
                column_type_names=None if declared is None else [declared.types[n] for n in names],
                column_oriented=True,
            )


# Arrow types of the declared column types an Arrow insert carries (only customer_features' so far).
_ARROW_TYPES = {
    "String": pa.string(),
    "UInt64": pa.uint64(),
    "DateTime64(3, 'UTC')": pa.timestamp("ms", tz="UTC"),  # given as epoch milliseconds
}


def arrow_table(table: Table, columns: dict[str, ColumnValues]) -> pa.Table:
    """``columns`` of ``table`` as an Arrow table, each column of its declared type.

    clickhouse-connect serialises a Map column from one Python dict per row
    (~45 µs a ``customer_features`` row of ~180 pairs); from Arrow, chDB reads
    the same row in ~20 µs and no dict is built (bench/replay.py --timers).
    """
    types = table.types
    arrays = {}
    for name, values in columns.items():
        if isinstance(values, FeatureMaps):
            arrays[name] = values.to_arrow()
        elif types[name] in _ARROW_TYPES:
            arrays[name] = pa.array(values, _ARROW_TYPES[types[name]])
        else:
            msg = f"{table.name}.{name}: no Arrow type for {types[name]}"
            raise ValueError(msg)
    return pa.table(arrays)


class TableBuffer:
    """Rows waiting for their inserts: merged per table across the dataflow's batches, flushed by size or age.

    Each insert costs ~9 ms whatever its size, and a batch of shard outputs
    writes up to six tables: written per batch, small batches spend most of
    their time in fixed insert costs. Buffered, the rows of many batches (and
    of the dead-letter stream) leave in one insert per table, when
    ``max_rows`` rows wait or the oldest has waited ``max_seconds`` (a timer
    thread flushes a buffer no new batch reaches), and at the end of the run.
    The tables named in ``first`` are written first (the ones readers wait for:
    the score tables came third and fourth of five), the others in the order
    they came.
    ``max_seconds`` 0 writes every batch at once (one insert per table per
    batch, as a run with a recovery store must: a row still buffered when the
    process dies would be lost after its epoch's snapshot).

    The tables named in ``later`` (no reader waits for them: the archive of
    events, feature rows, item activity) stay behind a timed flush until
    their oldest row has waited ``later_seconds``; a flush by size, ``flush``
    and a buffer with ``max_seconds`` 0 write them with the rest. Every insert
    has a fixed cost (~7.5 ms of CPU in chDB, and a part to merge): a live
    stream flushing five times a second wrote ~25 inserts a second, most of
    them for these tables (BENCHMARKS.md 6q). A batch counts as written
    (``written``) once the tables read for freshness are.

    ``stamps`` (table -> (leader, column)): the rows of such a table carry in
    ``column`` the wall-clock time (epoch ms, after the insert returned) at
    which its leader's rows of the same batches were written, whenever they
    are written themselves. ``score_history`` is written behind, every 2 s,
    yet each of its rows says when its score became visible in ``scores``:
    the freshness a reader sees (BENCHMARKS.md 6t). The two tables' rows come
    in the same order from the same batches (``table_rows``), so the leader's
    writes, counted in rows, stamp the follower's rows in order; a flush that
    takes both writes the leader first.

    ``newest`` (table -> (key columns, version column)): the rows of such a
    table replace each other by key (``Table.replacing``: FINAL reads each
    key's largest version), so a write takes only each key's newest row
    (``newest_rows``). A replay refreshes a customer every day or two of
    event time, each refresh a ``customer_features`` row of ~180 (name,
    value) pairs, and a replay's write holds a 50,000-event batch of its
    source, ~12 days of The Complete Journey: 12,004 rows leave instead of
    102,494 over its first 300,000 events (BENCHMARKS.md 6x). ClickHouse
    collapses an insert's duplicates too (``optimize_on_insert``), but only
    after it has read, converted and sorted all of them.

    Inserts run on one writer thread, in the order the rows were taken: a
    full buffer is written while the dataflow goes on (it waits only when the
    next buffer is full before that write is done, so at most one buffer is
    being written and one filling); an old one is written while its timer
    holds the buffer, so a batch arriving meanwhile waits for it (a live
    stream's flushes are all timed: letting its batches through cost 6-13 %
    more CPU per event for a 14-17 % lower p99, BENCHMARKS.md 6k); ``flush``
    waits for everything before it, and ``max_seconds`` 0 for each batch.

    Counters (``RunStats``) move when the rows are written, not when buffered,
    and ``after_flush`` is called then (progress is reported from there: a
    line printed when a batch arrives would show counts of rows still
    buffered, and a quiet live stream would never print the rest). An insert
    that fails on the writer thread is raised by the next ``add`` or ``flush``.
    """

    def __init__(
        self,
        writer: TableWriter,
        max_rows: int = 0,
        max_seconds: float = 0.0,
        after_flush: Callable[[], None] | None = None,
        first: tuple[str, ...] = (),
        later: tuple[str, ...] = (),
        later_seconds: float = 0.0,
        stamps: Mapping[str, tuple[str, str]] | None = None,
        newest: Mapping[str, tuple[tuple[str, ...], str]] | None = None,
    ):
        self.writer = writer
        self.max_rows = max_rows
        self.max_seconds = max_seconds
        self.after_flush = after_flush
        self.first = first
        self.later = frozenset(later)
        self.later_seconds = max(later_seconds, max_seconds)
        self.stamps = dict(stamps or {})
        self.newest = dict(newest or {})
        # leader -> [rows, epoch ms] of its writes whose follower rows are not written yet (on the writer thread)
        self._stamped: dict[str, deque[list[int]]] = {leader: deque() for leader, _ in self.stamps.values()}
        self._tables: TableRows = {}
        self._counts: list[Callable[[], None]] = []
        self._rows = 0
        self._later_since: float | None = None  # monotonic time the oldest row of a ``later`` table came
        self._lock = threading.RLock()  # the rows buffered; writes are queued under it, so in the order taken
        self._timer: threading.Timer | None = None
        self._timer_at = 0.0  # when the timer fires (monotonic)
        self._writes: ThreadPoolExecutor | None = None  # the writer thread, started by the first write
        self._last: Future[Any] | None = None  # the write queued last
        self._error: BaseException | None = None
        self.flushes = 0

    def add(self, rows: TableRows, written: Callable[[], None]) -> None:
        """Buffer ``rows``; ``written`` is called once they are in ClickHouse."""
        self._raise()
        with self._lock:
            now = time.monotonic()
            for table, columns in rows.items():
                held = self._tables.get(table)
                if held is None:
                    self._tables[table] = {n: v.copy() for n, v in columns.items()}
                else:
                    for name, values in columns.items():
                        held[name] += values
                self._rows += _n_rows(columns)
                if table in self.later and self._later_since is None:
                    self._later_since = now
            self._counts.append(written)
            if self.max_seconds > 0 and self._rows < self.max_rows:
                self._arm(now + self.max_seconds)
                return
            before, this = self._last, self._queue_rows()
        # wait, not result: a write of rows keeps its error for _raise; a ``locked`` job's was its caller's
        if self.max_seconds <= 0:
            wait((this,))
        elif before is not None:
            wait((before,))  # the write before this one: at most one buffer waits for the writer
        self._raise()

    def locked(self, write: Callable[[], object]) -> None:
        """Run ``write`` (another use of the same client) while no flush is under way; its error is raised here."""
        with self._lock:
            job = self._queue(write)
        job.result()

    def flush(self) -> None:
        """Write whatever is buffered now, after the writes queued before; wait for them all."""
        with self._lock:
            last = self._queue_rows()
        last.result()
        self._raise()

    def _on_timer(self) -> None:
        with self._lock:  # held until written: a batch arriving meanwhile waits (live: fewer, larger steps)
            self._timer = None
            if self._tables or self._counts:
                since = self._later_since
                late = since is not None and time.monotonic() >= since + self.later_seconds - 1e-3
                self._queue_rows(keep=() if late else self.later).result()
            if self._later_since is not None:  # rows of ``later`` tables wait on
                self._arm(self._later_since + self.later_seconds)

    def _arm(self, at: float) -> None:
        """Have the timer fire at ``at`` (monotonic) at the latest (call with ``_lock`` held)."""
        if self._timer is not None:
            if self._timer_at <= at:
                return
            self._timer.cancel()
        self._timer = threading.Timer(max(0.0, at - time.monotonic()), self._on_timer)
        self._timer.daemon = True
        self._timer_at = at
        self._timer.start()

    def _queue(self, job: Callable[[], object]) -> Future[Any]:
        if self._writes is None:
            self._writes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="propstream-sink")
        self._last = self._writes.submit(job)
        return self._last

    def _queue_rows(self, keep: Iterable[str] = ()) -> Future[Any]:
        """Take what is buffered, but the tables in ``keep``, and queue its write (call with ``_lock`` held)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        tables, counts = self._tables, self._counts
        held = {t: tables.pop(t) for t in keep if t in tables}
        self._tables, self._counts = held, []
        self._rows = sum(_n_rows(c) for c in held.values())
        if not held:
            self._later_since = None
        return self._queue(lambda: self._write(tables, counts))

    def _write(self, tables: TableRows, counts: list[Callable[[], None]]) -> None:
        try:
            # stable: the rest keep their order; a follower (``stamps``) after its leader
            for table in sorted(tables, key=lambda t: (t not in self.first, t in self.stamps)):
                columns = tables[table]
                n_rows = _n_rows(columns)  # as taken: a leader's stamps count the rows of its batches
                if table in self.newest:
                    columns = newest_rows(columns, *self.newest[table])
                stamp = self.stamps.get(table)
                if stamp is not None:
                    leader, column = stamp
                    columns = {**columns, column: self._take_stamps(leader, _n_rows(columns))}
                self.writer.insert(table, columns)
                writes = self._stamped.get(table)
                if writes is not None:
                    writes.append([n_rows, int(time.time() * 1000)])
            if tables:
                self.flushes += 1
            for written in counts:
                written()
            if counts and self.after_flush is not None:
                self.after_flush()
        except BaseException as exc:  # handed to the dataflow's thread by the next add or flush
            log.error("buffered insert failed: %s", exc)
            self._error = exc

    def _take_stamps(self, leader: str, n: int) -> list[int]:
        """When ``leader``'s rows were written, for the next ``n`` rows of its follower (writer thread).

        A row whose leader's write is not on record (none was buffered with
        it) gets the time of its own write: it is visible by then.
        """
        writes = self._stamped[leader]
        out: list[int] = []
        while len(out) < n and writes:
            write = writes[0]
            take = min(write[0], n - len(out))
            out += [write[1]] * take
            write[0] -= take
            if not write[0]:
                writes.popleft()
        return out + [int(time.time() * 1000)] * (n - len(out))

    def _raise(self) -> None:
        if self._error is not None:
            exc, self._error = self._error, None
            raise exc


def _n_rows(columns: dict[str, ColumnValues]) -> int:
    return len(next(iter(columns.values()), []))


def newest_rows(columns: dict[str, ColumnValues], key: tuple[str, ...], version: str) -> dict[str, ColumnValues]:
    """Each key's newest row of ``columns`` (the largest ``version``, the last of equals), in their order.

    What FINAL reads of a ``ReplacingMergeTree(version)`` table, chosen before the insert.

    >>> newest_rows({"u": ["a", "b", "a", "b"], "v": [1, 5, 2, 5], "x": [10, 20, 30, 40]}, ("u",), "v")
    {'u': ['a', 'b'], 'v': [2, 5], 'x': [30, 40]}
    """
    versions = columns[version]
    if not isinstance(versions, list):
        msg = f"a version column is a list of numbers, not {type(versions).__name__}"
        raise TypeError(msg)
    keys = columns[key[0]] if len(key) == 1 else list(zip(*(columns[k] for k in key), strict=True))
    at: dict[Any, int] = {}
    for i, k in enumerate(keys):
        j = at.get(k)
        if j is None or versions[j] <= versions[i]:
            at[k] = i
    if len(at) == len(versions):
        return columns
    rows = sorted(at.values())
    return {n: v.take(rows) if isinstance(v, FeatureMaps) else [v[i] for i in rows] for n, v in columns.items()}


class _Partition(StatelessSinkPartition[Any]):
    """Hands each batch of items to the buffer as rows per table; counted once written."""

    def __init__(self, buffer: TableBuffer, rows: Callable[[list], TableRows], count: Callable[[list], None]):
        self.buffer = buffer
        self.rows = rows
        self.count = count

    def write_batch(self, items: list) -> None:
        count = self.count
        self.buffer.add(self.rows(items), lambda: count(items))

    def close(self) -> None:
        self.buffer.flush()


# Tables no reader waits for (the events' archive, feature rows for retraining, hourly item counts, the history of
# scores, whose rows say when their score reached ``scores``): written less often by a live stream
# (``stream.sink_archive_flush_seconds``).
ARCHIVE_TABLES = (EVENTS.name, CUSTOMER_FEATURES.name, ITEM_ACTIVITY.name, SCORE_HISTORY.name)


class ClickHouseSink(DynamicSink[ShardOutput]):
    """Writes every table of ShardOutput batches through a ``TableBuffer`` (by default, one insert per table per batch).

    ``dead_letter_sink()`` and ``trending_sink()`` are its companions for the
    dataflow's dead-letter and trending streams: the same buffer and counters,
    the ``dead_letters`` and ``trending`` tables. ``flush_rows``/``flush_seconds``
    and ``archive_flush_seconds`` (``later_seconds`` of the tables no reader
    waits for: ``events``, ``customer_features``, ``item_activity``,
    ``score_history``, whose ``written_at`` is stamped with the time the same
    scores reached ``scores``): see ``TableBuffer``. ``customer_features``
    and ``item_activity`` rows replace each other by key: a write takes each
    key's newest (``TableBuffer``'s ``newest``).
    """

    def __init__(
        self,
        writer: TableWriter,
        stats: RunStats | None = None,
        report: Callable[[RunStats], None] | None = None,
        report_every_s: float = 5.0,
        *,
        type_names: tuple[str, ...],
        flush_rows: int = 0,
        flush_seconds: float = 0.0,
        archive_flush_seconds: float = 0.0,
    ):
        self.writer = writer
        first = (SCORES.name,)  # what freshness means to a reader of ClickHouse
        self.buffer = TableBuffer(
            writer,
            flush_rows,
            flush_seconds,
            after_flush=self._progress,
            first=first,
            later=ARCHIVE_TABLES,
            later_seconds=archive_flush_seconds,
            stamps={SCORE_HISTORY.name: (SCORES.name, "written_at")},
            newest={t.name: key for t in (CUSTOMER_FEATURES, ITEM_ACTIVITY) if (key := t.replacing)},
        )
        self.type_names = type_names  # the vocabulary's names: the events table stores a type by name
        self.stats = stats or RunStats()
        self.report = report
        self.every = report_every_s
        self._report_lock = threading.RLock()
        self._report_timer: threading.Timer | None = None

    def _progress(self) -> None:
        """After rows were written (so the counts are current): a progress line, at most every ``every`` s.

        A write that comes sooner is reported when the line is due (a timer), so
        the last counts of a burst are always printed, even if nothing follows
        it: a quiet live stream once showed the first half of its events forever.
        """
        if self.report is None:
            return
        with self._report_lock:
            wait = self.every - (time.perf_counter() - self.stats.last_report)
            if wait > 0:
                if self._report_timer is None:
                    self._report_timer = threading.Timer(wait, self._report_due)
                    self._report_timer.daemon = True
                    self._report_timer.start()
                return
            if self._report_timer is not None:
                self._report_timer.cancel()
                self._report_timer = None
            self.stats.last_report = time.perf_counter()
            self.report(self.stats)

    def _report_due(self) -> None:
        with self._report_lock:
            self._report_timer = None
        self._progress()

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
        names = self.type_names
        rows = lambda outputs: table_rows(outputs, names)  # noqa: E731
        return _Partition(self.buffer, rows, self.stats.add)

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
        return _Partition(o.buffer, rows, o.stats.add_dead_letters)


class _TrendingTableSink(DynamicSink[TrendRow]):
    def __init__(self, outputs: ClickHouseSink):
        self.outputs = outputs

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
        o = self.outputs
        return _Partition(o.buffer, trending_rows, o.stats.add_trending)
