"""The sink's TableBuffer against embedded ClickHouse: rows of many batches leave together, by size, age or the end."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from schemas.events import TYPE_NAMES, FeatureRow, ItemActivityRow
from schemas.tables import CUSTOMER_FEATURES, ITEM_ACTIVITY, SCORE_HISTORY, SCORES, create_table_ddl
from stream.apply import ItemColumns
from stream.rows import FeatureColumns
from stream.scoring import ScoreColumns
from stream.shard import ShardOutput
from stream.sinks.base import table_rows
from stream.sinks.clickhouse import (
    ClickHouseSink,
    ClickHouseUnavailableError,
    ClickHouseWriter,
    TableBuffer,
    open_client,
)

T = 1_500_000_000_000


@pytest.fixture
def writer(chdb_dsn: str) -> ClickHouseWriter:
    client = open_client(chdb_dsn)
    db = f"buf_{uuid.uuid4().hex[:8]}"
    client.command(f"CREATE DATABASE {db}")
    for table in ("a", "b"):
        client.command(f"CREATE TABLE {db}.{table} (n Int64) ENGINE = MergeTree ORDER BY n")
    return ClickHouseWriter(client, db)


def stored(w: ClickHouseWriter, table: str) -> list[int]:
    return [r[0] for r in w.client.query(f"SELECT n FROM {w.database}.{table} ORDER BY n").result_rows]


def test_batches_under_the_limits_wait_and_leave_in_one_insert_per_table(writer: ClickHouseWriter):
    buf = TableBuffer(writer, max_rows=1_000, max_seconds=3_600)
    written: list[int] = []
    for i in range(5):
        buf.add({"a": {"n": [i]}, "b": {"n": [10 + i, 20 + i]}}, lambda i=i: written.append(i))
    assert stored(writer, "a") == [] and written == []  # nothing written yet, nothing counted
    buf.flush()
    assert stored(writer, "a") == [0, 1, 2, 3, 4]
    assert stored(writer, "b") == sorted([10 + i for i in range(5)] + [20 + i for i in range(5)])
    assert written == [0, 1, 2, 3, 4]
    assert buf.flushes == 1


class OrderedWriter(ClickHouseWriter):
    """Inserts as usual and remembers in which order the tables were written."""

    def __init__(self, writer: ClickHouseWriter):
        super().__init__(writer.client, writer.database)
        self.order: list[str] = []

    def insert(self, table: str, columns: dict[str, list]) -> None:
        super().insert(table, columns)
        self.order.append(table)


def test_the_tables_readers_wait_for_are_written_first(writer: ClickHouseWriter):
    writer.client.command(f"CREATE TABLE {writer.database}.c (n Int64) ENGINE = MergeTree ORDER BY n")
    ordered = OrderedWriter(writer)
    buf = TableBuffer(ordered, max_rows=1_000, max_seconds=3_600, first=("c", "b"))
    buf.add({"a": {"n": [1]}, "b": {"n": [2]}}, lambda: None)
    buf.add({"c": {"n": [3]}, "a": {"n": [4]}}, lambda: None)
    buf.flush()
    assert ordered.order == ["b", "c", "a"]  # the first ones in the order they came, then the rest
    assert stored(writer, "a") == [1, 4] and stored(writer, "b") == [2] and stored(writer, "c") == [3]
    buf.add({"a": {"n": [5]}}, lambda: None)
    buf.flush()
    assert ordered.order[3:] == ["a"]


class GatedWriter(ClickHouseWriter):
    """Inserts as usual once its gate is open; counts the inserts begun."""

    def __init__(self, writer: ClickHouseWriter):
        super().__init__(writer.client, writer.database)
        self.gate = threading.Event()
        self.begun = 0

    def insert(self, table: str, columns: dict[str, list]) -> None:
        self.begun += 1
        self.gate.wait(30)
        super().insert(table, columns)


def test_a_full_buffer_is_written_behind_the_dataflow_and_the_next_full_one_waits_for_that_write(
    writer: ClickHouseWriter,
):
    gated = GatedWriter(writer)
    buf = TableBuffer(gated, max_rows=4, max_seconds=3_600)
    buf.add({"a": {"n": [1, 2]}}, lambda: None)
    buf.add({"a": {"n": [3]}, "b": {"n": [4]}}, lambda: None)  # 4 rows across tables: full, returns at once
    deadline = time.monotonic() + 30  # a bound for a loaded machine, not a speed claim
    while gated.begun == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gated.begun == 1 and stored(writer, "a") == []  # its write has begun, held at the gate
    second = threading.Thread(target=buf.add, args=({"a": {"n": [5, 6, 7, 8]}}, lambda: None))
    second.start()
    second.join(0.3)
    assert second.is_alive()  # a second full buffer waits for the write before it: one buffer behind at most
    gated.gate.set()
    second.join(30)
    buf.flush()
    assert stored(writer, "a") == [1, 2, 3, 5, 6, 7, 8] and stored(writer, "b") == [4]


def test_rows_no_batch_follows_are_written_when_they_are_old_enough(writer: ClickHouseWriter):
    # after_flush sees the counters of written rows: progress is reported from there, so a quiet
    # live stream still prints the counts of its last rows (a line per batch showed them buffered)
    seen: list[tuple[list, list]] = []
    counted: list[int] = []
    buf = TableBuffer(
        writer, max_rows=1_000, max_seconds=0.05, after_flush=lambda: seen.append((stored(writer, "a"), list(counted)))
    )
    buf.add({"a": {"n": [7]}}, lambda: counted.append(1))
    assert seen == []
    deadline = time.monotonic() + 30  # a bound for a loaded machine, not a speed claim
    while not seen and time.monotonic() < deadline:
        time.sleep(0.05)
    assert seen == [([7], [1])]


def test_rows_of_the_tables_no_reader_waits_for_stay_behind_the_timed_flushes_until_their_own_age(
    writer: ClickHouseWriter,
):
    ordered = OrderedWriter(writer)
    at_flush: list[tuple[list, list, list]] = []  # (a, b, counted) as each write ends
    counted: list[int] = []
    buf = TableBuffer(
        ordered,
        max_rows=1_000,
        max_seconds=0.05,
        after_flush=lambda: at_flush.append((stored(writer, "a"), stored(writer, "b"), list(counted))),
        later=("b",),
        later_seconds=3_600,
    )
    buf.add({"a": {"n": [1]}, "b": {"n": [10]}}, lambda: counted.append(1))
    deadline = time.monotonic() + 30  # a bound for a loaded machine, not a speed claim
    while not at_flush and time.monotonic() < deadline:
        time.sleep(0.01)
    assert at_flush == [([1], [], [1])]  # the batch counts once what readers wait for is written
    buf.add({"a": {"n": [2]}, "b": {"n": [11]}}, lambda: counted.append(2))
    while len(at_flush) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert at_flush[1] == ([1, 2], [], [1, 2]) and ordered.order == ["a", "a"]
    buf.flush()  # the end of a run writes them all, in one insert
    assert stored(writer, "b") == [10, 11] and ordered.order == ["a", "a", "b"]
    buf.add({"b": {"n": [12]}, "a": {"n": [3]}}, lambda: None)
    buf.add({"a": {"n": list(range(4, 1_004))}}, lambda: None)  # full: a flush by size takes every table
    buf.flush()
    assert stored(writer, "b") == [10, 11, 12] and ordered.order[3:] == ["b", "a"]


def test_rows_of_a_table_no_reader_waits_for_that_no_batch_follows_are_written_at_their_age(
    writer: ClickHouseWriter,
):
    buf = TableBuffer(writer, max_rows=1_000, max_seconds=0.05, later=("b",), later_seconds=0.3)
    buf.add({"a": {"n": [1]}, "b": {"n": [10]}}, lambda: None)
    deadline = time.monotonic() + 30  # a bound for a loaded machine, not a speed claim
    while stored(writer, "b") == [] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stored(writer, "a") == [1] and stored(writer, "b") == [10]
    assert buf.flushes == 2  # the timed flush of "a", then "b" at its own age


class TimedWriter(ClickHouseWriter):
    """Inserts as usual; remembers each insert's table and its start and end (epoch ms, end taken after it returned)."""

    def __init__(self, writer: ClickHouseWriter):
        super().__init__(writer.client, writer.database)
        self.spans: list[tuple[str, int, int]] = []

    def insert(self, table: str, columns: dict[str, list]) -> None:
        start = int(time.time() * 1000)
        super().insert(table, columns)
        self.spans.append((table, start, int(time.time() * 1000)))


def test_rows_written_behind_carry_the_time_their_leaders_rows_were_written(writer: ClickHouseWriter):
    """A follower table (``stamps``) written behind, at its own age or at the end, says in its column when the
    rows of its leader from the same batches became visible, not when it was written itself."""
    writer.client.command(f"CREATE TABLE {writer.database}.f (n Int64, t Int64) ENGINE = MergeTree ORDER BY n")
    timed = TimedWriter(writer)
    buf = TableBuffer(
        timed, max_rows=1_000, max_seconds=0.05, later=("f",), later_seconds=3_600, stamps={"f": ("a", "t")}
    )
    deadline = time.monotonic() + 30  # a bound for a loaded machine, not a speed claim
    for i, batch in enumerate(([1], [2, 3], [4])):
        buf.add({"f": {"n": [10 * n for n in batch]}, "a": {"n": batch}}, lambda: None)
        while len(timed.spans) <= i and time.monotonic() < deadline:  # the timed flush of "a" alone
            time.sleep(0.01)
        time.sleep(0.05)  # the leader's writes at distinct times
    assert [t for t, _, _ in timed.spans] == ["a", "a", "a"] and stored(writer, "f") == []
    buf.add({"a": {"n": [5]}, "f": {"n": [50]}}, lambda: None)
    buf.add({"a": {"n": list(range(6, 1_006))}}, lambda: None)  # full: takes every table, the leader first
    buf.flush()
    assert [t for t, _, _ in timed.spans] == ["a", "a", "a", "a", "f"]
    (_, f_start, _) = timed.spans[-1]
    got = writer.client.query(f"SELECT n, t FROM {writer.database}.f ORDER BY n").result_rows
    assert [n for n, _ in got] == [10, 20, 30, 40, 50]
    leader_ends = [end for _, _, end in timed.spans[:4]]
    ((_, t1), (_, t2), (_, t3), (_, t4), (_, t5)) = got
    for stamp, end in zip((t1, t2, t4, t5), leader_ends, strict=True):  # 20 and 30 came in one batch
        assert end <= stamp <= f_start
    assert t2 == t3 and t1 < t2 < t4 < t5  # each row the time of its own leader's write, in order


def test_the_sinks_score_history_says_when_each_score_became_visible_in_scores(writer: ClickHouseWriter):
    for table in (SCORES, SCORE_HISTORY):
        writer.client.command(create_table_ddl(table, writer.database))
    sink = ClickHouseSink(
        writer, type_names=TYPE_NAMES, flush_rows=10_000, flush_seconds=0.05, archive_flush_seconds=3_600
    )
    part = sink.build("s", 0, 1)
    scores = ScoreColumns(T, ["u1", "u2"], ["coffee", "coffee"], [0.25, 0.75], [1, 1], [7, 8])
    part.write_batch([ShardOutput(0, scores=scores)])
    sql = "SELECT user_id, toUnixTimestamp64Milli(written_at) FROM {db}.{t} ORDER BY user_id"
    deadline = time.monotonic() + 30  # a bound for a loaded machine, not a speed claim
    while not writer.client.query(sql.format(db=writer.database, t="scores")).result_rows:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    visible = dict(writer.client.query(sql.format(db=writer.database, t="scores")).result_rows)
    time.sleep(0.5)
    assert writer.client.query(sql.format(db=writer.database, t="score_history")).result_rows == []  # behind
    time.sleep(0.5)  # score_history is written a second after the scores, at the end of the run
    before_history = int(time.time() * 1000)
    part.close()
    history = dict(writer.client.query(sql.format(db=writer.database, t="score_history")).result_rows)
    assert history.keys() == visible.keys() == {"u1", "u2"}
    for user, at in history.items():
        assert visible[user] <= at < before_history - 500  # when the score was visible, not when history was written


def test_a_sink_without_an_age_as_with_a_recovery_store_writes_the_stamped_history_with_every_batch(
    writer: ClickHouseWriter,
):
    """A run with a recovery store writes every table per batch (nothing is held past a snapshot): the score
    history too, each row stamped with its own batch's ``scores`` write, whatever ``archive_flush_seconds`` says."""
    for table in (SCORES, SCORE_HISTORY):
        writer.client.command(create_table_ddl(table, writer.database))
    timed = TimedWriter(writer)
    sink = ClickHouseSink(timed, type_names=TYPE_NAMES, flush_rows=10_000, flush_seconds=0, archive_flush_seconds=3_600)
    part = sink.build("s", 0, 1)
    for i, user in enumerate(("u1", "u2")):
        part.write_batch([ShardOutput(0, scores=ScoreColumns(T + i, [user], ["coffee"], [0.5], [1], [i]))])
        assert [t for t, _, _ in timed.spans] == ["scores", "score_history"] * (i + 1)  # both, before it returns
        time.sleep(0.05)  # the two batches' writes at distinct times
    sql = f"SELECT user_id, toUnixTimestamp64Milli(written_at) FROM {writer.database}.score_history ORDER BY user_id"
    history = writer.client.query(sql).result_rows
    scores_ends = [end for t, _, end in timed.spans if t == "scores"]
    history_starts = [start for t, start, _ in timed.spans if t == "score_history"]
    assert [u for u, _ in history] == ["u1", "u2"]
    for (_, at), end, start in zip(history, scores_ends, history_starts, strict=True):
        assert end <= at <= start  # its own batch's scores write, before the history's own


def test_without_an_age_the_tables_no_reader_waits_for_are_written_with_every_batch(writer: ClickHouseWriter):
    buf = TableBuffer(writer, max_rows=1_000, max_seconds=0, later=("b",), later_seconds=3_600)
    buf.add({"a": {"n": [1]}, "b": {"n": [10]}}, lambda: None)
    assert stored(writer, "a") == [1] and stored(writer, "b") == [10] and buf.flushes == 1


def test_without_an_age_every_batch_is_written_at_once(writer: ClickHouseWriter):
    buf = TableBuffer(writer, max_rows=1_000, max_seconds=0)
    buf.add({"a": {"n": [1]}}, lambda: None)
    assert stored(writer, "a") == [1]
    buf.add({"a": {"n": [2]}}, lambda: None)
    assert stored(writer, "a") == [1, 2] and buf.flushes == 2


def test_a_failed_timed_insert_is_raised_by_the_next_call(writer: ClickHouseWriter):
    buf = TableBuffer(writer, max_rows=1_000, max_seconds=0.01)
    buf.add({"missing_table": {"n": [1]}}, lambda: None)
    deadline = time.monotonic() + 30
    while buf._error is None and time.monotonic() < deadline:
        time.sleep(0.02)
    with pytest.raises(Exception, match="missing_table"):
        buf.add({"a": {"n": [2]}}, lambda: None)


def test_a_failed_write_behind_the_dataflow_is_raised_on_its_thread_by_the_next_full_buffer_at_the_latest(
    writer: ClickHouseWriter,
):
    counted: list[int] = []
    buf = TableBuffer(writer, max_rows=1, max_seconds=3_600)
    with pytest.raises(Exception, match="missing_table"):
        buf.add({"missing_table": {"n": [1]}}, lambda: counted.append(1))  # full: written behind (raises if done)
        buf.add({"a": {"n": [2]}}, lambda: None)  # waits for the write before it: raises by now at the latest
    buf.add({"a": {"n": [3]}}, lambda: counted.append(3))
    buf.flush()
    assert counted == [3] and 3 in stored(writer, "a")  # the failed rows were never counted


def test_another_use_of_the_client_that_fails_raises_for_its_caller_only_not_for_the_next_full_buffer(
    writer: ClickHouseWriter,
):
    buf = TableBuffer(writer, max_rows=1, max_seconds=3_600)

    def failing_sync() -> None:  # e.g. the models table synced between flushes, whose failure is only logged
        raise RuntimeError("models table")

    with pytest.raises(RuntimeError, match="models table"):
        buf.locked(failing_sync)
    buf.add({"a": {"n": [1]}}, lambda: None)  # full: waits for the job before it, which failed for its caller
    buf.flush()
    assert stored(writer, "a") == [1]


def test_progress_reports_the_last_write_of_a_burst_even_if_nothing_follows(writer: ClickHouseWriter):
    # Two writes within the report interval: the first is reported at once, the second when the
    # line is due, though no write follows it (CI: a test waited forever for "3,000 applied").
    from stream.sinks.base import RunStats
    from stream.sinks.clickhouse import ClickHouseSink

    stats = RunStats()
    lines: list[int] = []
    sink = ClickHouseSink(writer, stats, report=lambda s: lines.append(s.applied), report_every_s=0.3, type_names=())

    def bump(n: int) -> None:
        stats.applied += n

    sink.buffer.add({"a": {"n": [1]}}, lambda: bump(1))
    sink.buffer.add({"a": {"n": [2]}}, lambda: bump(2))
    assert lines == [1]
    deadline = time.monotonic() + 30  # a bound for a loaded machine, not a speed claim
    while len(lines) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # and only once
    assert lines == [1, 3]


def test_the_embedded_engine_reads_its_memory_statistics_every_5_s_not_every_100_ms(writer: ClickHouseWriter):
    # ClickHouse's default (0: every 100 ms) was a quarter of an idle stream's CPU (BENCHMARKS.md, idle cost)
    rows = writer.client.query("SELECT value FROM system.server_settings WHERE name = 'memory_worker_period_ms'")
    assert rows.result_rows == [("5000",)]


def test_feature_rows_of_batches_with_different_names_leave_as_one_arrow_insert_and_read_back_as_written(
    writer: ClickHouseWriter,
):
    """customer_features as declared (Map(LowCardinality(String), Float64)); the Map column goes as Arrow."""
    writer.client.command(create_table_ddl(CUSTOMER_FEATURES, writer.database))
    first = FeatureColumns.from_rows(
        [FeatureRow("u1", T, {"a": 1.0, "b": 0.25}, 7), FeatureRow("u2", T, {"rec": 30.0}, 8)]
    )
    second = FeatureColumns.from_rows([FeatureRow("u3", T + 1, {"b": -2.5, "new": 1e-300, "a": 0.0}, 9)])
    buf = TableBuffer(writer, max_rows=1_000, max_seconds=3_600)
    for fc in (first, second):  # the sink's own path: shard outputs -> columns per table -> buffer
        buf.add(table_rows([ShardOutput(0, features=fc)], TYPE_NAMES), lambda: None)
    buf.flush()
    assert buf.flushes == 1
    got = writer.client.query(
        f"SELECT user_id, toUnixTimestamp64Milli(as_of), features, version FROM {writer.database}.customer_features"
        " ORDER BY user_id"
    ).result_rows
    assert [FeatureRow(*r) for r in got] == [*first, *second]
    assert [list(r[2]) for r in got] == [["a", "b"], ["rec"], ["b", "new", "a"]]  # each row's own order


def queries_run(w: ClickHouseWriter) -> int:
    """The engine's count of queries so far (this one included)."""
    return int(w.client.command("SELECT value FROM system.events WHERE event = 'Query'"))


def test_a_declared_table_is_written_with_its_declared_types_in_one_query_per_insert(writer: ClickHouseWriter):
    writer.client.command(create_table_ddl(SCORES, writer.database))
    before = queries_run(writer)
    for i in range(5):
        row = {"user_id": [f"u{i}"], "group_id": ["coffee"], "score": [0.5], "model_version": [1], "as_of": [T]}
        writer.insert(SCORES.name, row | {"version": [i]})
    declared = queries_run(writer) - before - 1
    before = queries_run(writer)
    for _ in range(5):
        writer.insert("a", {"n": [1]})
    undeclared = queries_run(writer) - before - 1
    assert (declared, undeclared) == (5, 10)  # a table of its own asks the store for its types first
    sql = f"SELECT user_id, toUnixTimestamp64Milli(as_of), version FROM {writer.database}.scores ORDER BY user_id"
    assert writer.client.query(sql).result_rows == [(f"u{i}", T, i) for i in range(5)]


class CountingWriter(ClickHouseWriter):
    """Inserts as usual and remembers how many rows each insert was given (what the engine keeps can be fewer)."""

    def __init__(self, writer: ClickHouseWriter):
        super().__init__(writer.client, writer.database)
        self.given: list[tuple[str, int]] = []

    def insert(self, table: str, columns: dict[str, list]) -> None:
        super().insert(table, columns)
        self.given.append((table, len(next(iter(columns.values())))))


def test_a_table_whose_rows_replace_each_other_by_key_is_given_one_newest_row_per_key(writer: ClickHouseWriter):
    """What FINAL would read, chosen before the insert: the largest version, the last of equals."""
    writer.client.command(
        f"CREATE TABLE {writer.database}.r (k String, v Int64, n Int64) ENGINE = ReplacingMergeTree(v) ORDER BY k"
    )
    counting = CountingWriter(writer)
    buf = TableBuffer(counting, max_rows=1_000, max_seconds=3_600, newest={"r": (("k",), "v")})
    batches = [
        {"k": ["a", "b"], "v": [1, 1], "n": [10, 20]},
        {"k": ["a", "c"], "v": [2, 1], "n": [11, 30]},
        {"k": ["b", "a"], "v": [1, 0], "n": [21, 9]},  # b: an equal version, later; a: an older one, later
    ]
    for batch in batches:
        buf.add({"r": batch, "a": {"n": [1]}}, lambda: None)
    buf.flush()
    assert sorted(counting.given) == [("a", 3), ("r", 3)]  # other tables keep every row
    rows = writer.client.query(f"SELECT k, v, n FROM {writer.database}.r ORDER BY k").result_rows
    assert rows == [("a", 2, 11), ("b", 1, 21), ("c", 1, 30)]


def test_without_an_age_a_table_of_newest_rows_is_written_with_every_batch(writer: ClickHouseWriter):
    """A run with a recovery store: no row waits past its batch; only a batch's own repeats are left out."""
    counting = CountingWriter(writer)
    buf = TableBuffer(counting, max_rows=1_000, max_seconds=0, newest={"a": (("n",), "n")})
    buf.add({"a": {"n": [1, 1, 2]}}, lambda: None)
    buf.add({"a": {"n": [1]}}, lambda: None)
    assert counting.given == [("a", 2), ("a", 1)] and stored(writer, "a") == [1, 1, 2]


def test_the_sinks_feature_and_item_rows_leave_one_per_key_the_newest(writer: ClickHouseWriter):
    """customer_features: one row per customer, its newest features; item_activity: one per hour cell, its count."""
    for table in (CUSTOMER_FEATURES, ITEM_ACTIVITY):
        writer.client.command(create_table_ddl(table, writer.database))
    counting = CountingWriter(writer)
    sink = ClickHouseSink(counting, type_names=TYPE_NAMES, flush_rows=10_000, flush_seconds=3_600)
    part = sink.build("s", 0, 1)
    features = [
        [FeatureRow("u1", T, {"a": 1.0}, 7), FeatureRow("u2", T, {"b": 2.0, "c": 3.0}, 8)],
        [FeatureRow("u1", T + 1, {"a": 2.0, "d": 0.5}, 9)],
        [FeatureRow("u3", T + 2, {}, 10), FeatureRow("u2", T + 2, {"c": 4.0}, 11)],
    ]
    hour = T // 3_600_000 * 3_600_000
    items = [
        [ItemActivityRow(hour, "i1", "purchase", 0, 1, 1.0, 2.5)],
        [
            ItemActivityRow(hour, "i1", "purchase", 0, 3, 4.0, 7.5),
            ItemActivityRow(hour, "i2", "purchase", 0, 1, 1.0, 1.0),
        ],
        [],
    ]
    for rows, cells in zip(features, items, strict=True):
        out = ShardOutput(0, features=FeatureColumns.from_rows(rows), item_activity=ItemColumns.from_rows(cells))
        part.write_batch([out])
    part.close()
    assert sorted(counting.given) == [("customer_features", 3), ("item_activity", 2)]
    got = writer.client.query(
        f"SELECT user_id, toUnixTimestamp64Milli(as_of), features, version FROM {writer.database}.customer_features"
        " ORDER BY user_id"
    ).result_rows
    assert [FeatureRow(*r) for r in got] == [features[1][0], features[2][1], features[2][0]]
    sql = f"SELECT item_id, events, value FROM {writer.database}.item_activity ORDER BY item_id"
    assert writer.client.query(sql).result_rows == [("i1", 3, 7.5), ("i2", 1, 1.0)]


def refusing_inserts(w: ClickHouseWriter) -> str:
    """A score table whose inserts the engine refuses (TOO_MANY_PARTS: merges stopped, 2 parts at most) once full."""
    table = f"{w.database}.{SCORES.name}"
    w.client.command(create_table_ddl(SCORES, w.database))
    w.client.command(f"SYSTEM STOP MERGES {table}")
    w.client.command(f"ALTER TABLE {table} MODIFY SETTING parts_to_throw_insert = 2, parts_to_delay_insert = 100")
    return table


def score_row(i: int) -> dict[str, list]:
    return {"user_id": [f"u{i}"], "group_id": ["coffee"], "score": [0.5], "model_version": [1], "as_of": [T]} | {
        "version": [i]
    }


def test_an_insert_the_engine_refuses_for_too_many_parts_is_tried_again_until_merges_catch_up(
    writer: ClickHouseWriter,
):
    table = refusing_inserts(writer)
    patient = ClickHouseWriter(writer.client, writer.database, retry_seconds=60)
    buf = TableBuffer(patient)  # no age: each batch waits for its write, as with a recovery store
    for i in range(2):
        buf.add({SCORES.name: score_row(i)}, lambda: None)
    def merge() -> None:
        writer.client.command(f"SYSTEM START MERGES {table}")
        writer.client.command(f"OPTIMIZE TABLE {table} FINAL")  # the merge a server's background pool would do

    merges = threading.Timer(1.5, merge)
    merges.start()
    started = time.monotonic()
    written: list[int] = []
    buf.add({SCORES.name: score_row(2)}, lambda: written.append(2))  # refused until the parts are merged
    merges.join()
    assert written == [2] and time.monotonic() - started >= 1.5 and patient.retries >= 2
    users = writer.client.query(f"SELECT user_id FROM {table} FINAL ORDER BY user_id").result_rows
    assert users == [("u0",), ("u1",), ("u2",)]


def test_a_refusal_that_lasts_past_sink_retry_seconds_stops_the_sink_with_a_one_line_error(writer: ClickHouseWriter):
    refusing_inserts(writer)
    patient = ClickHouseWriter(writer.client, writer.database, retry_seconds=1.0)
    for i in range(2):
        patient.insert(SCORES.name, score_row(i))
    started = time.monotonic()
    with pytest.raises(ClickHouseUnavailableError) as refused:
        patient.insert(SCORES.name, score_row(2))
    message = str(refused.value)
    assert "\n" not in message and "insert into scores" in message and "TOO_MANY_PARTS" in message
    assert "stream.sink_retry_seconds 1" in message
    assert 0.7 <= time.monotonic() - started < 5 and patient.retries >= 2


def test_an_insert_refused_for_a_lasting_reason_is_not_tried_again(writer: ClickHouseWriter):
    patient = ClickHouseWriter(writer.client, writer.database, retry_seconds=60)
    started = time.monotonic()
    with pytest.raises(Exception, match="missing_table") as refused:
        patient.insert("missing_table", {"n": [1]})
    assert not isinstance(refused.value, ClickHouseUnavailableError)  # the engine's own error, at once
    assert patient.retries == 0 and time.monotonic() - started < 5
