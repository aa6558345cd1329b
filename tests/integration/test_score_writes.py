"""bench/score_writes.py compares two ways of writing the same score rows: both must write every row to both tables."""

from __future__ import annotations

import uuid

from bench.score_writes import run_way, score_batches
from schemas.tables import SCORE_HISTORY, SCORES, create_table_ddl
from stream.sinks.clickhouse import ClickHouseWriter, open_client


class CountedWriter(ClickHouseWriter):
    """Inserts as usual and remembers which tables it wrote, in order."""

    def __init__(self, client, database: str):
        super().__init__(client, database)
        self.tables: list[str] = []

    def insert(self, table: str, columns: dict) -> None:
        super().insert(table, columns)
        self.tables.append(table)


def test_both_ways_write_every_score_row_to_both_tables_and_only_behind_writes_the_history_less_often(chdb_dsn: str):
    client = open_client(chdb_dsn)
    inserts: dict[str, list[str]] = {}
    for way in ("beside", "behind"):
        db = f"sw_{way}_{uuid.uuid4().hex[:6]}"
        client.command(f"CREATE DATABASE {db}")
        for table in (SCORES, SCORE_HISTORY):
            client.command(create_table_ddl(table, db))
        writer = CountedWriter(client, db)
        run_way(way, writer, score_batches(0.6, 7, seed=1), tail=0)
        inserts[way] = writer.tables
        (kept,) = client.query(f"SELECT count() FROM {db}.{SCORE_HISTORY.name} FINAL").result_rows[0]
        assert kept == 7 * 12, way  # every row of every tick (an as-of per tick)
        distinct = f"SELECT uniqExact(group_id, user_id) FROM {db}.{SCORES.name}"
        assert (
            client.query(f"SELECT count() FROM {db}.{SCORES.name} FINAL").result_rows
            == client.query(distinct).result_rows
        )
    beside, behind = ({t: inserts[w].count(t) for t in ("scores", "score_history")} for w in ("beside", "behind"))
    assert beside["scores"] == beside["score_history"] >= 2  # timed flushes of 0.2 s over 0.6 s, and the end
    assert behind["scores"] == beside["scores"] and behind["score_history"] == 1  # at 2 s or the end of the run
